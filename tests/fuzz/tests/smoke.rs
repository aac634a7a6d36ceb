//! The fuzz targets on stable, bounded: each target's seeds and the inputs libFuzzer once
//! crashed on (`regressions/<target>/`), then random mutations of them for a few seconds.
//! Not coverage-guided (that is `cargo xtask fuzz`); it keeps the targets running and
//! their invariants true in every `cargo test`.

use std::path::Path;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Wall-clock budget and execution bound of one target's smoke.
const TIME_PER_TARGET: Duration = Duration::from_secs(8);
const MAX_EXECUTIONS: u64 = 200_000;
/// Inputs longer than this are cut (libFuzzer's default -max_len is 4096).
const MAX_LEN: usize = 4096;

/// The inputs libFuzzer crashed on, kept so they are replayed forever.
fn regressions(target: &str) -> Vec<Vec<u8>> {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("regressions")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&directory) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path()).ok())
        .collect()
}

/// One random change: flip, set, insert, delete or duplicate bytes.
fn mutate(input: &mut Vec<u8>, rng: &mut StdRng) {
    const INTERESTING: [u8; 6] = [0x00, 0x01, 0x7F, 0x80, 0xFF, 0x40];
    match rng.gen_range(0..6) {
        0 if !input.is_empty() => {
            let at = rng.gen_range(0..input.len());
            input[at] ^= 1 << rng.gen_range(0..8);
        }
        1 if !input.is_empty() => {
            let at = rng.gen_range(0..input.len());
            input[at] = INTERESTING[rng.gen_range(0..INTERESTING.len())];
        }
        2 => {
            let at = rng.gen_range(0..=input.len());
            let bytes: Vec<u8> = (0..rng.gen_range(1..16)).map(|_| rng.gen()).collect();
            input.splice(at..at, bytes);
        }
        3 if !input.is_empty() => {
            let start = rng.gen_range(0..input.len());
            let end = rng.gen_range(start..=input.len().min(start + 32));
            input.drain(start..end);
        }
        4 if !input.is_empty() => {
            let start = rng.gen_range(0..input.len());
            let end = rng.gen_range(start..=input.len().min(start + 32));
            let chunk = input[start..end].to_vec();
            let at = rng.gen_range(0..=input.len());
            input.splice(at..at, chunk);
        }
        _ => {
            let len = rng.gen_range(0..256);
            *input = (0..len).map(|_| rng.gen()).collect();
        }
    }
    input.truncate(MAX_LEN);
}

fn smoke(target: &str) {
    let mut corpus = turn_fuzz::seeds(target);
    corpus.extend(regressions(target));
    assert!(!corpus.is_empty(), "{target} has no seeds");
    for input in &corpus {
        turn_fuzz::run(target, input);
    }
    let mut rng = StdRng::seed_from_u64(0x0f22);
    let started = Instant::now();
    let mut executions = corpus.len() as u64;
    while executions < MAX_EXECUTIONS && started.elapsed() < TIME_PER_TARGET {
        let mut input = corpus[rng.gen_range(0..corpus.len())].clone();
        for _ in 0..rng.gen_range(1..4) {
            mutate(&mut input, &mut rng);
        }
        turn_fuzz::run(target, &input);
        executions += 1;
    }
    eprintln!(
        "{target}: {executions} executions in {:.1?}",
        started.elapsed()
    );
}

#[test]
fn stun_codec() {
    smoke("stun_codec");
}

#[test]
fn channel_data() {
    smoke("channel_data");
}

#[test]
fn turn_server() {
    smoke("turn_server");
}

#[test]
fn config() {
    smoke("config");
}
