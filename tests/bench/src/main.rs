//! `turn-bench`: a re-runnable benchmark of this relay against coturn on one machine, in one
//! run, on the same topology and load (issue #4). `turn-bench run --quick --out DIR`
//! writes results.md, results.json and plot-*.svg to DIR; `cargo xtask bench` runs it.
//! Needs root.
//!
//! One run builds client/relay/peer network namespaces (the testkit's topology with its
//! benchmark wiring), times the XDP program per path under BPF_PROG_TEST_RUN
//! ([`xdp_timing`]), then for each server
//! ([`servers`]: coturn, ours with XDP off, ours with XDP) measures STUN Binding requests/s
//! and authenticated allocations/s ([`control`]), sweeps the offered rate per scenario to
//! find the highest rate relayed with ≤ 0.1 % loss ([`load`]), measures one-way latency at
//! half of coturn's maximum rate. Clients over TCP and TLS relay ChannelData to the same
//! sink ([`stream_load`]; coturn and ours in userspace, as XDP relays UDP clients only).
//! Last, the per-core comparison ([`per_core`]): each server with one relay thread,
//! pinned with its NAPI kthreads to one core, its CPU per relayed packet at fixed rates
//! with frames from sockets (skbs) and from the live-frames generator (XDP frames,
//! [`kernel_mode`]), its highest rate of live frames relayed with ≤ 0.1 % loss (the
//! kernel-speed table) and, for ours-xdp, its XDP program's cost under live traffic by
//! rate ([`live_cost`]); `--per-core-only` runs just that. Results go to Markdown, JSON and SVG files
//! ([`report`]), the per-core table first. `turn-bench scale` ([`scale`]) measures memory
//! per allocation instead.
//!
//! [`options`] turns `turn-bench run`'s command line into a plan, [`bench`](mod@bench) runs it, and
//! [`results`] holds what it measured.

mod bench;
mod control;
mod cpu;
mod disturbance;
mod kernel_mode;
mod live_cost;
mod load;
mod options;
mod per_core;
mod pinning;
mod report;
mod results;
mod scale;
mod servers;
mod stream_load;
mod xdp_compare;
mod xdp_timing;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use turn_testkit::privilege::is_root;

use options::RunOptions;

/// Set by SIGINT/SIGTERM (signal-hook); every load loop checks it and returns, so the
/// namespaces are torn down and partial results written.
static INTERRUPTED: LazyLock<Arc<AtomicBool>> = LazyLock::new(Arc::default);

/// True once SIGINT/SIGTERM arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

fn install_signal_handlers() -> Result<()> {
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&INTERRUPTED))
            .context("installing the signal handlers")?;
    }
    Ok(())
}

#[derive(Parser)]
#[command(
    version,
    about = "Benchmark turn-relay against coturn on the same machine and load"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the benchmark and write results.md, results.json and plots.
    Run(Box<RunOptions>),
    /// Only the XDP program's per-path cost (BPF_PROG_TEST_RUN, the table `run` puts in
    /// results.md), printed as a Markdown table: seconds instead of minutes.
    XdpTiming {
        /// Single runs per path, the median reported (at most and by default 50000, as
        /// `run` does).
        #[arg(long, default_value_t = xdp_timing::MAX_RUNS)]
        runs: u32,
        /// Only this single-run row (e.g. channel_data_to_peer_v4) after the baseline,
        /// timed `--rounds` times over: for a profiler, e.g. `perf record -e cpu-clock --
        /// turn-bench xdp-timing --only channel_data_to_peer_v4 --rounds 20`.
        #[arg(long)]
        only: Option<String>,
        /// Rounds of `--only` (at most 1000).
        #[arg(long, default_value_t = 1, requires = "only")]
        rounds: u32,
    },
    /// A before/after table of the XDP program's cost per path: this binary's
    /// `xdp-timing` and another build's (`--against`, e.g. a turn-bench built at an
    /// earlier commit), run in turn `--pairs` times each; per row the median cost of each
    /// and the median paired difference.
    XdpCompare {
        /// The other turn-bench binary ("before").
        #[arg(long)]
        against: PathBuf,
        /// Tables of each build (at most 50).
        #[arg(long, default_value_t = 6)]
        pairs: u32,
    },
    /// Scale and memory: ours with XDP and N allocations with a channel each, the
    /// daemon's RSS per allocation and the XDP maps' kernel memory (minutes, not part of
    /// `run`).
    Scale(Box<scale::ScaleOptions>),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(options) => bench::run(&options),
        Command::Scale(options) => scale::run(&options),
        Command::XdpCompare { against, pairs } => {
            if !is_root() {
                bail!("turn-bench xdp-compare needs root (BPF_PROG_TEST_RUN, a network namespace)");
            }
            xdp_compare::run(&against, pairs.clamp(1, 50))
        }
        Command::XdpTiming { runs, only, rounds } => {
            if !is_root() {
                bail!("turn-bench xdp-timing needs root (BPF_PROG_TEST_RUN, a network namespace)");
            }
            let timings = match only {
                Some(name) => xdp_timing::time_path(&name, runs, rounds)?,
                None => xdp_timing::time_paths(runs)?,
            };
            println!("| path | ns/packet |\n|---|---|");
            for (path, ns) in timings {
                println!("| {path} | {ns:.1} |");
            }
            Ok(())
        }
    }
}

/// `given`, or else the turn-relay daemon next to this binary (target/release/turn-relay).
fn relay_binary(given: Option<&std::path::Path>) -> Result<PathBuf> {
    match given {
        Some(path) => Ok(path.to_owned()),
        None => Ok(std::env::current_exe()?
            .parent()
            .context("binary has no directory")?
            .join("turn-relay")),
    }
}
