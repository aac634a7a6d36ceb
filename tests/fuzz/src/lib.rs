//! Fuzz targets of the relay and the invariants they check, in one place for both ways
//! they run:
//!
//! - coverage-guided by libFuzzer, through cargo-fuzz: `cargo xtask fuzz [--time S]`
//!   (the entry points are the crate in `libfuzzer/`, built with the nightly toolchain);
//! - as a bounded smoke on stable, by `cargo test` (`tests/smoke.rs`): the seeds, then
//!   random mutations of them for a few seconds per target.
//!
//! Every target must never panic, whatever its input; each also checks what its code
//! promises (a parsed message re-encodes to the same attributes, a printed configuration
//! parses to the same configuration, the TURN core never installs or relays to a peer its
//! policy refuses, …). A broken invariant panics, which libFuzzer reports as a crash with
//! the input that caused it.

pub mod channel_data;
pub mod config;
pub mod stun_codec;
pub mod turn_server;

/// The targets, by the names cargo-fuzz knows them by.
pub const TARGETS: [&str; 4] = ["stun_codec", "channel_data", "turn_server", "config"];

/// Inputs each target starts from: valid messages and files that a mutation turns into
/// interesting invalid ones. Empty for an unknown target.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "stun_codec" => stun_codec::seeds(),
        "channel_data" => channel_data::seeds(),
        "turn_server" => turn_server::seeds(),
        "config" => config::seeds(),
        _ => Vec::new(),
    }
}

/// Runs `target` on `data` (the raw bytes libFuzzer hands a target; `turn_server` reads
/// its script from them as cargo-fuzz's `Arbitrary` support does).
pub fn run(target: &str, data: &[u8]) {
    match target {
        "stun_codec" => stun_codec::run(data),
        "channel_data" => channel_data::run(data),
        "turn_server" => turn_server::run_bytes(data),
        "config" => config::run(data),
        other => panic!("no fuzz target {other}"),
    }
}
