//! `cargo xtask test`: setup, the Debian package, every test of the workspace (the
//! packaging test installs that package), then the quick benchmark.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::command::{cargo, describe, run_checked};

/// Totals over every `test result:` line cargo's test harnesses print.
#[derive(Default)]
struct TestTotals {
    passed: u64,
    failed: u64,
    ignored: u64,
    failed_names: Vec<String>,
}

impl TestTotals {
    /// Folds one line of libtest output into the totals.
    fn record(&mut self, line: &str) {
        if let Some(name) = line
            .strip_prefix("test ")
            .and_then(|rest| rest.strip_suffix(" ... FAILED"))
        {
            self.failed_names.push(name.to_owned());
        }
        let Some(counts) = line.strip_prefix("test result: ") else {
            return;
        };
        for field in counts.split(';') {
            let mut words = field.split_whitespace().rev();
            let (Some(kind), Some(number)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(number) = number.parse::<u64>() else {
                continue;
            };
            match kind {
                "passed" => self.passed += number,
                "failed" => self.failed += number,
                "ignored" => self.ignored += number,
                _ => {}
            }
        }
    }
}

/// The quick benchmark's outcome: it runs so the harness cannot rot; its numbers are for
/// reading, never asserted.
enum BenchmarkOutcome {
    Ran,
    Failed(String),
}

/// Runs setup, the workspace tests and the quick benchmark; prints a summary and fails
/// if anything failed.
pub fn run(workspace: &Path) -> Result<()> {
    let started = Instant::now();
    let setup_started = Instant::now();
    crate::setup::run(workspace)?;
    let setup_time = setup_started.elapsed();

    // The end-to-end tests start the debug `turn-relay` binary; `cargo test` only builds
    // binaries of the package under test, so build it explicitly first.
    let build_started = Instant::now();
    println!("==> test: cargo build -p turn-userspace --bin turn-relay");
    run_checked(cargo().args(["build", "-p", "turn-userspace", "--bin", "turn-relay"]))
        .context("building the daemon binary for the end-to-end tests")?;
    let build_time = build_started.elapsed();

    // The release build it makes is the one the quick benchmark runs later.
    let package_started = Instant::now();
    let package = crate::package::run(workspace).context("cargo xtask package")?;
    let package_time = package_started.elapsed();

    let tests_started = Instant::now();
    let (tests_succeeded, totals) = cargo_test_workspace(&package)?;
    let tests_time = tests_started.elapsed();

    let benchmark_started = Instant::now();
    let benchmark = run_quick_benchmark(workspace);
    let benchmark_time = benchmark_started.elapsed();

    println!();
    println!("==> summary");
    summary_row("setup", "ok", setup_time, "");
    summary_row("build turn-relay", "ok", build_time, "");
    summary_row(
        "package",
        "ok",
        package_time,
        &package.display().to_string(),
    );
    summary_row(
        "cargo test --workspace",
        if tests_succeeded { "ok" } else { "FAILED" },
        tests_time,
        &format!(
            "{} passed, {} failed, {} ignored",
            totals.passed, totals.failed, totals.ignored
        ),
    );
    for name in &totals.failed_names {
        println!("      failed: {name}");
    }
    match &benchmark {
        BenchmarkOutcome::Ran => summary_row(
            "quick benchmark",
            "ok",
            benchmark_time,
            "results in target/bench-quick/results.md",
        ),
        BenchmarkOutcome::Failed(reason) => {
            summary_row("quick benchmark", "FAILED", benchmark_time, reason)
        }
    }
    summary_row("total", "", started.elapsed(), "");

    if !tests_succeeded {
        bail!("cargo test --workspace failed");
    }
    if let BenchmarkOutcome::Failed(reason) = benchmark {
        bail!("the quick benchmark failed: {reason}");
    }
    Ok(())
}

/// `cargo test --workspace --no-fail-fast` (every test binary runs even after a failure),
/// echoing the output while counting results; `package` is the .deb the packaging test
/// installs (`TURN_RELAY_DEB`).
fn cargo_test_workspace(package: &Path) -> Result<(bool, TestTotals)> {
    let mut command = cargo();
    command
        .args(["test", "--workspace", "--no-fail-fast"])
        .env("TURN_RELAY_DEB", package)
        .stdout(Stdio::piped());
    let line = describe(&command);
    println!("==> test: {line}");
    let mut child = command
        .spawn()
        .with_context(|| format!("could not start `{line}`"))?;
    let mut totals = TestTotals::default();
    if let Some(stdout) = child.stdout.take() {
        for output_line in BufReader::new(stdout).lines() {
            let output_line = output_line.with_context(|| format!("reading `{line}` output"))?;
            println!("{output_line}");
            totals.record(&output_line);
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{line}`"))?;
    Ok((status.success(), totals))
}

/// `cargo xtask bench --quick`, so the benchmark harness is exercised by every test run.
fn run_quick_benchmark(workspace: &Path) -> BenchmarkOutcome {
    let out = crate::target_dir(workspace).join("bench-quick");
    match crate::run_benchmark(workspace, true, &out, &[]) {
        Ok(()) => BenchmarkOutcome::Ran,
        Err(error) => BenchmarkOutcome::Failed(format!("{error:#}")),
    }
}

fn summary_row(stage: &str, status: &str, duration: Duration, detail: &str) {
    println!(
        "  {stage:<24} {status:<8} {:>8.1}s  {detail}",
        duration.as_secs_f64()
    );
}

#[cfg(test)]
mod tests {
    use super::TestTotals;

    #[test]
    fn totals_add_up_libtest_result_lines_and_failed_names() {
        let mut totals = TestTotals::default();
        for line in [
            "test stun::tests::parses ... ok",
            "test e2e::binding ... FAILED",
            "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s",
            "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 9.20s",
        ] {
            totals.record(line);
        }
        assert_eq!((totals.passed, totals.failed, totals.ignored), (15, 2, 1));
        assert_eq!(totals.failed_names, vec!["e2e::binding".to_owned()]);
    }
}
