//! Developer tasks for the TURN relay:
//! `cargo xtask <setup|build|run|build-and-load|test|bench|quote-bench|demo|package|fuzz>`.
//!
//! Every task prints what it does and how long it took, and fails with context
//! (`anyhow`) naming the step that broke.

mod command;
mod fuzz;
mod package;
mod readme;
mod setup;
mod test;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::command::{cargo, run_checked};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Developer tasks for the eBPF/XDP TURN relay"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing on a fresh Debian 12 machine (idempotent).
    Setup,
    /// Release build of the eBPF object and the daemon.
    Build,
    /// Setup, build, then run the daemon with its embedded default configuration.
    Run {
        /// Extra arguments for `turn-relay` (after `--`).
        #[arg(last = true)]
        daemon_args: Vec<String>,
    },
    /// Release build, then run the daemon with a configuration file (attaching XDP on
    /// the configured interfaces).
    BuildAndLoad {
        /// The daemon's TOML configuration.
        #[arg(long)]
        config: PathBuf,
        /// Extra arguments for `turn-relay` (after `--`).
        #[arg(last = true)]
        daemon_args: Vec<String>,
    },
    /// Setup, then every unit and end-to-end test of the workspace (privileged ones too),
    /// then the quick benchmark.
    Test,
    /// Setup, release build, then the benchmark against coturn (`turn-bench run`, crate
    /// `tests/bench`):
    /// results.md, results.json and SVG plots in `--out`.
    Bench {
        /// The quick subset (under 2 minutes), as `cargo xtask test` runs it.
        #[arg(long)]
        quick: bool,
        /// Where the results go.
        #[arg(long, default_value = "bench-results")]
        out: PathBuf,
        /// Extra arguments for `turn-bench run` (after `--`), e.g. `--only coturn,ours-xdp`.
        #[arg(last = true)]
        bench_args: Vec<String>,
    },
    /// Puts a benchmark's results.md into README.md's latest-run block, stamped with the
    /// run's start and the commit it ran on (after `cargo xtask test`, which leaves its
    /// quick run in target/bench-quick/results.md).
    QuoteBench {
        /// The results to quote.
        #[arg(default_value = "target/bench-quick/results.md")]
        results: PathBuf,
        /// The commit the run was on (default: HEAD).
        #[arg(long)]
        commit: Option<String>,
    },
    /// Setup, release build, then a live demonstration: client, relay and peer namespaces,
    /// the relay with XDP, coturn's uclient driving traffic through it, and per-second
    /// counters of what XDP and userspace relayed (`turn-demo`, crate `tests/testkit`).
    Demo {
        /// How long the client sends.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Release build, then the Debian package target/package/turn-relay_<version>_<arch>.deb
    /// (binary, systemd unit, sysusers entry, /etc/turn-relay/turn-relay.toml).
    Package,
    /// Setup, then every fuzz target of `tests/fuzz` under libFuzzer (cargo-fuzz, nightly)
    /// one after the other, and a table of executions, coverage and crashes.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 300)]
        time: u64,
        /// Stop a target after this many executions if it gets there before `--time`.
        #[arg(long)]
        runs: Option<u64>,
        /// Only these targets (stun_codec, channel_data, turn_server, config).
        #[arg(long = "target")]
        targets: Vec<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let workspace = workspace_root();
    std::env::set_current_dir(&workspace)
        .with_context(|| format!("entering the workspace at {}", workspace.display()))?;
    match cli.task {
        Task::Setup => setup::run(&workspace),
        Task::Build => build_release(),
        Task::Run { daemon_args } => {
            setup::run(&workspace)?;
            build_release()?;
            exec_daemon(&workspace, &daemon_args)
        }
        Task::BuildAndLoad {
            config,
            daemon_args,
        } => {
            let config = std::fs::canonicalize(&config)
                .with_context(|| format!("configuration file {}", config.display()))?;
            build_release()?;
            let mut args = vec!["--config".to_owned(), config.display().to_string()];
            args.extend(daemon_args);
            exec_daemon(&workspace, &args)
        }
        Task::Test => test::run(&workspace),
        Task::Bench {
            quick,
            out,
            bench_args,
        } => {
            setup::run(&workspace)?;
            run_benchmark(&workspace, quick, &out, &bench_args)
        }
        Task::QuoteBench { results, commit } => {
            readme::run(&workspace, &results, commit.as_deref())
        }
        Task::Demo { seconds } => {
            setup::run(&workspace)?;
            run_demo(&workspace, seconds)
        }
        Task::Package => package::run(&workspace).map(drop),
        Task::Fuzz {
            time,
            runs,
            targets,
        } => {
            setup::run(&workspace)?;
            fuzz::run(
                &workspace,
                &fuzz::Budget {
                    seconds: time,
                    runs,
                },
                &targets,
            )
        }
    }
}

/// Builds the release daemon and `turn-bench` (`tests/bench`), then runs the benchmark;
/// the Markdown table it writes is the one the README's benchmark section quotes.
pub(crate) fn run_benchmark(
    workspace: &Path,
    quick: bool,
    out: &Path,
    extra_args: &[String],
) -> Result<()> {
    let started = Instant::now();
    release_build(
        &[
            "-p",
            "turn-userspace",
            "--bin",
            "turn-relay",
            "-p",
            "turn-bench",
            "--bin",
            "turn-bench",
        ],
        "turn-relay and turn-bench",
    )?;
    let release = target_dir(workspace).join("release");
    let mut bench = Command::new(release.join("turn-bench"));
    bench
        .arg("run")
        .arg("--out")
        .arg(out)
        .arg("--relay-binary")
        .arg(release.join("turn-relay"));
    if quick {
        bench.arg("--quick");
    }
    bench.args(extra_args);
    run_checked(&mut bench).context("running turn-bench")?;
    println!(
        "==> bench finished in {:.1?}; results in {}",
        started.elapsed(),
        out.join("results.md").display()
    );
    Ok(())
}

/// Builds the release daemon and `turn-demo` (`tests/testkit`), then replaces this
/// process with the demo, so Ctrl-C reaches it directly and it tears its namespaces down.
fn run_demo(workspace: &Path, seconds: u64) -> Result<()> {
    release_build(
        &[
            "-p",
            "turn-userspace",
            "--bin",
            "turn-relay",
            "-p",
            "turn-testkit",
            "--bin",
            "turn-demo",
        ],
        "turn-relay and turn-demo",
    )?;
    let release = target_dir(workspace).join("release");
    let demo = release.join("turn-demo");
    println!("==> demo: {}", demo.display());
    let error = Command::new(&demo)
        .arg("--relay-binary")
        .arg(release.join("turn-relay"))
        .arg("--seconds")
        .arg(seconds.to_string())
        .exec();
    Err(error).with_context(|| format!("starting {}", demo.display()))
}

/// `cargo build --release <arguments>` (packages and binaries), failing with `what`.
pub(crate) fn release_build(arguments: &[&str], what: &str) -> Result<()> {
    println!("==> cargo build --release {}", arguments.join(" "));
    run_checked(cargo().args(["build", "--release"]).args(arguments))
        .with_context(|| format!("release build of {what}"))
}

/// The workspace root: xtask lives one directory below it.
fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Cargo's target directory (honours `CARGO_TARGET_DIR`).
pub(crate) fn target_dir(workspace: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    }
}

/// `cargo build --release -p turn-userspace`: the daemon with the eBPF object embedded
/// (turn-userspace's build script compiles turn-ebpf through aya-build).
fn build_release() -> Result<()> {
    let started = Instant::now();
    println!("==> build: cargo build --release -p turn-userspace");
    run_checked(cargo().args(["build", "--release", "-p", "turn-userspace"]))
        .context("release build of turn-userspace (daemon + eBPF object)")?;
    println!("==> build finished in {:.1?}", started.elapsed());
    Ok(())
}

/// Replaces this process with the release daemon, so signals (Ctrl-C, SIGTERM) reach it
/// directly and it can detach XDP cleanly.
fn exec_daemon(workspace: &Path, args: &[String]) -> Result<()> {
    let binary = target_dir(workspace).join("release").join("turn-relay");
    println!("==> run: {} {}", binary.display(), args.join(" "));
    let error = Command::new(&binary).args(args).exec();
    Err(error).with_context(|| format!("starting {}", binary.display()))
}
