//! turn-bench: benchmark turn-relay (XDP on and off) against coturn on one machine.
//!
//! `turn-bench run --quick --out DIR` builds the namespaces, runs every server under the
//! same load and writes results.md, results.json and plot-*.svg to DIR. Needs root.

use clap::{Parser, Subcommand};
use turn_relay::bench::{run, RunOptions};

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
    Run(RunOptions),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(options) => run(&options),
    }
}
