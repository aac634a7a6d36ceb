//! `cargo xtask fuzz`: every fuzz target of `tests/fuzz` under libFuzzer (cargo-fuzz on
//! the nightly toolchain), one after the other, each for a time or a number of runs; then
//! a table of executions, coverage, corpus and crashes per target. Fails if a target
//! crashed (its input is in `target/fuzz/artifacts/<target>/`; copy it to
//! `tests/fuzz/regressions/<target>/` with the fix, so every `cargo test` replays it).
//!
//! Coverage instrumentation without a sanitizer (`-s none`): the code under test is safe
//! Rust, so what libFuzzer looks for are panics (broken invariants included), and the
//! fuzzer runs several times faster without AddressSanitizer.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::command::{cargo, describe, run_checked};

/// The targets, as `tests/fuzz/libfuzzer/Cargo.toml` names them.
pub const TARGETS: [&str; 4] = ["stun_codec", "channel_data", "turn_server", "config"];
/// The cargo-fuzz package, relative to the workspace.
const FUZZ_DIR: &str = "tests/fuzz/libfuzzer";
/// Crash inputs kept as regression tests, relative to the workspace.
const REGRESSIONS: &str = "tests/fuzz/regressions";
/// The largest input libFuzzer generates.
const MAX_LEN: u32 = 4096;

/// How long each target runs.
pub struct Budget {
    /// Seconds per target.
    pub seconds: u64,
    /// Stop a target after this many executions instead, if it gets there first.
    pub runs: Option<u64>,
}

/// What one target's run reported (libFuzzer's `-print_final_stats` and its last status
/// line).
#[derive(Default)]
struct Report {
    executions: u64,
    executions_per_second: u64,
    /// Edges covered (`cov:`) and features (`ft:`).
    coverage: u64,
    features: u64,
    corpus: u64,
    crashed: bool,
    crash_input: Option<String>,
}

impl Report {
    /// Reads libFuzzer's output; `succeeded`: its exit status. A run stopped by Ctrl-C
    /// ("run interrupted") reports its stats and is no crash.
    fn parse(output: &str, succeeded: bool) -> Report {
        let mut report = Report {
            crashed: !succeeded && !output.contains("run interrupted"),
            ..Report::default()
        };
        let number = |text: &str| text.trim().parse::<u64>().unwrap_or(0);
        for line in output.lines() {
            if let Some(value) = line.strip_prefix("stat::number_of_executed_units:") {
                report.executions = number(value);
            } else if let Some(value) = line.strip_prefix("stat::average_exec_per_sec:") {
                report.executions_per_second = number(value);
            } else if let Some(path) = line
                .split_once("Test unit written to ")
                .map(|(_, path)| path.trim())
            {
                report.crash_input = Some(path.to_owned());
            }
            // "#123456	REDUCE cov: 812 ft: 3051 corp: 220/14Kb ..."
            if line.starts_with('#') {
                let mut words = line.split_whitespace();
                while let Some(word) = words.next() {
                    match word {
                        "cov:" => report.coverage = words.next().map_or(0, number),
                        "ft:" => report.features = words.next().map_or(0, number),
                        "corp:" => {
                            report.corpus = words
                                .next()
                                .and_then(|corpus| corpus.split('/').next())
                                .map_or(0, number);
                        }
                        _ => {}
                    }
                }
            }
        }
        report
    }
}

/// Builds the targets, writes the seeds, runs each of `targets` (all when empty) within
/// `budget`, and prints the table.
pub fn run(workspace: &Path, budget: &Budget, targets: &[String]) -> Result<()> {
    let started = Instant::now();
    let selected: Vec<&str> = if targets.is_empty() {
        TARGETS.to_vec()
    } else {
        for target in targets {
            if !TARGETS.contains(&target.as_str()) {
                bail!("no fuzz target {target} (targets: {})", TARGETS.join(", "));
            }
        }
        targets.iter().map(String::as_str).collect()
    };
    let fuzz_target_dir = crate::target_dir(workspace).join("fuzz");
    let corpus = fuzz_target_dir.join("corpus");
    println!("==> fuzz: seeds into {}", corpus.display());
    run_checked(
        cargo()
            .args([
                "run",
                "--quiet",
                "-p",
                "turn-fuzz",
                "--bin",
                "turn-fuzz-seeds",
                "--",
            ])
            .arg(&corpus),
    )
    .context("writing the seeds")?;
    println!("==> fuzz: building the targets (cargo-fuzz, nightly)");
    run_checked(&mut cargo_fuzz("build", &fuzz_target_dir))
        .context("building the fuzz targets (`cargo xtask setup` installs cargo-fuzz)")?;

    let mut reports = Vec::with_capacity(selected.len());
    for target in &selected {
        let report = run_target(workspace, &fuzz_target_dir, &corpus, target, budget)?;
        reports.push((*target, report));
    }

    println!();
    println!("==> fuzz summary ({:.0?})", started.elapsed());
    println!(
        "  {:<14} {:>14} {:>10} {:>8} {:>8} {:>7}  crashes",
        "target", "executions", "exec/s", "cov", "ft", "corpus"
    );
    for (target, report) in &reports {
        println!(
            "  {:<14} {:>14} {:>10} {:>8} {:>8} {:>7}  {}",
            target,
            report.executions,
            report.executions_per_second,
            report.coverage,
            report.features,
            report.corpus,
            match (&report.crashed, &report.crash_input) {
                (false, _) => "none".to_owned(),
                (true, Some(input)) => format!("1: {input}"),
                (true, None) => "1 (see its output above)".to_owned(),
            }
        );
    }
    let crashed: Vec<&str> = reports
        .iter()
        .filter(|(_, report)| report.crashed)
        .map(|(target, _)| *target)
        .collect();
    if !crashed.is_empty() {
        bail!("fuzz targets crashed: {}", crashed.join(", "));
    }
    Ok(())
}

/// `cargo fuzz <subcommand>` of the nightly toolchain on this workspace's fuzz package,
/// without a sanitizer, building into `target_dir`.
fn cargo_fuzz(subcommand: &str, target_dir: &Path) -> Command {
    let mut command = Command::new("rustup");
    command
        .args(["run", "nightly", "cargo", "fuzz", subcommand])
        .args([
            "--fuzz-dir",
            FUZZ_DIR,
            "--sanitizer",
            "none",
            "--target-dir",
        ])
        .arg(target_dir);
    command
}

fn run_target(
    workspace: &Path,
    target_dir: &Path,
    corpus: &Path,
    target: &str,
    budget: &Budget,
) -> Result<Report> {
    let artifacts: PathBuf = target_dir.join("artifacts").join(target);
    std::fs::create_dir_all(&artifacts)
        .with_context(|| format!("creating {}", artifacts.display()))?;
    let mut command = cargo_fuzz("run", target_dir);
    command.arg(target).arg(corpus.join(target));
    let regressions = workspace.join(REGRESSIONS).join(target);
    if regressions.is_dir() {
        command.arg(&regressions);
    }
    command
        .arg("--")
        .arg(format!("-max_total_time={}", budget.seconds))
        .arg(format!("-max_len={MAX_LEN}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1");
    if let Some(runs) = budget.runs {
        command.arg(format!("-runs={runs}"));
    }
    println!("==> fuzz {target}: {}", describe(&command));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{}`", describe(&command)))?;
    // libFuzzer reports on stderr: its periodic status lines, final stats and any crash
    // are shown as they come; everything is kept for the report.
    let stdout = child.stdout.take();
    let echo_stdout = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(stdout) = stdout {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                text.push_str(&line);
                text.push('\n');
            }
        }
        text
    });
    let mut text = String::new();
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if shown(&line) {
                println!("    {line}");
            }
            text.push_str(&line);
            text.push('\n');
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{}`", describe(&command)))?;
    text.push_str(&echo_stdout.join().unwrap_or_default());
    Ok(Report::parse(&text, status.success()))
}

/// The lines of libFuzzer's output worth showing while it runs.
fn shown(line: &str) -> bool {
    [
        "pulse",
        "DONE",
        "stat::",
        "ERROR",
        "panicked",
        "Test unit",
        "SUMMARY",
        "interrupted",
    ]
    .iter()
    .any(|marker| line.contains(marker))
}

#[cfg(test)]
mod tests {
    use super::Report;

    #[test]
    fn final_stats_and_status_lines_are_read() {
        let output = "\
INFO: Seed: 1\n\
#2\tINITED cov: 100 ft: 120 corp: 3/40b exec/s: 0 rss: 30Mb\n\
#524288\tpulse  cov: 812 ft: 3051 corp: 220/14Kb lim: 4096 exec/s: 174762 rss: 60Mb\n\
#1048576\tDONE   cov: 815 ft: 3060 corp: 221/14Kb lim: 4096 exec/s: 174000 rss: 61Mb\n\
stat::number_of_executed_units: 1048576\n\
stat::average_exec_per_sec:     174000\n\
stat::new_units_added:          218\n";
        let report = Report::parse(output, true);
        assert_eq!(
            (
                report.executions,
                report.executions_per_second,
                report.coverage,
                report.features,
                report.corpus,
                report.crashed
            ),
            (1_048_576, 174_000, 815, 3060, 221, false)
        );
        let crash = Report::parse(
            "thread panicked\n==1== ERROR: libFuzzer: deadly signal\n\
             artifact_prefix='a/'; Test unit written to a/crash-1234\n",
            false,
        );
        assert!(crash.crashed);
        assert_eq!(crash.crash_input.as_deref(), Some("a/crash-1234"));
        let interrupted = Report::parse(
            "==1== libFuzzer: run interrupted; exiting\nstat::number_of_executed_units: 42\n",
            false,
        );
        assert!(!interrupted.crashed);
        assert_eq!(interrupted.executions, 42);
    }
}
