//! `turn-relay`: the eBPF/XDP-accelerated TURN relay daemon.
//!
//! Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT, or drained with
//! `--exit-when-drained`) or a successful `--check-config`/`--print-config`; 2 for a bad
//! configuration or command line; 1 when the relay fails at run time (e.g. a listener
//! cannot be bound). `ctl` and `import-config` say their own in `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use turn_relay::daemon;
use turn_relay::daemon::config::import;
use turn_relay::daemon::config::{Config, LogFormat, Sources, MAX_THREADS};
use turn_relay::daemon::ctl;

/// eBPF/XDP-accelerated TURN relay (RFC 8656 over UDP).
///
/// Every configuration key can also be set by an environment variable
/// TURN_RELAY_<SECTION>_<KEY> (lists comma-separated); precedence is
/// file < environment < command line. Without --config and without such variables it
/// runs a loopback demo: 127.0.0.1:3478, realm "turn-relay.local", user "demo" with a
/// random password printed at start-up.
///
/// Signals: SIGTERM/SIGINT stop, SIGHUP reloads the configuration, SIGUSR1 starts draining.
#[derive(Debug, Parser)]
#[command(name = "turn-relay", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    relay: RelayArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ask a running relay through its admin endpoint: status, drain, undrain, reload,
    /// sessions (like eturnalctl).
    Ctl(ctl::CtlArgs),
    /// Print a turn-relay TOML equivalent to a coturn or restund configuration file.
    ImportConfig(import::ImportArgs),
}

#[derive(Debug, clap::Args)]
struct RelayArgs {
    /// TOML configuration file (documented in config/turn-relay.toml).
    #[arg(long, short = 'c', value_name = "PATH")]
    config: Option<PathBuf>,
    /// Listen on this UDP ip:port instead of the configured addresses (repeatable).
    #[arg(long, value_name = "IP:PORT")]
    listen: Vec<SocketAddr>,
    /// Use this realm instead of the configured one.
    #[arg(long)]
    realm: Option<String>,
    /// Log level or tracing filter (error, warn, info, debug, trace, "info,turn_relay=debug").
    /// RUST_LOG, when set, wins.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Log line format: "text" (coloured only on a terminal) or "json" (one object per
    /// line, for log shippers). Default: `log.format`, else text.
    #[arg(long, value_name = "FORMAT", value_parser = LogFormat::NAMES)]
    log_format: Option<String>,
    /// Validate the configuration, print a one-line summary and exit.
    #[arg(long)]
    check_config: bool,
    /// Print the effective configuration (secrets redacted), saying where each value came
    /// from, and exit.
    #[arg(long)]
    print_config: bool,
    /// Relay worker threads, each with its own SO_REUSEPORT listener socket, sharing one
    /// TURN server state (default: `server.threads`, else one per CPU).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=MAX_THREADS as i64))]
    threads: Option<u16>,
    /// Once draining, exit when the last allocation is gone or `server.drain_timeout`
    /// has passed (`server.drain_exit = true`).
    #[arg(long)]
    exit_when_drained: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Ctl(args)) => return ctl::main(&args),
        Some(Command::ImportConfig(args)) => return import::main(&args),
        None => {}
    }
    let args = cli.relay;
    let sources = sources(&args);
    let config = match Config::from_sources(&sources) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    if args.print_config || args.check_config {
        for ignored in &config.ignored_variables {
            eprintln!("warning: {ignored}");
        }
    }
    if args.print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    if args.check_config {
        println!(
            "config OK: {} (realm {}, listen {}, auth: {})",
            config.source,
            config.realm,
            config
                .listen
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            config.auth_summary()
        );
        return ExitCode::SUCCESS;
    }
    let log_filter = match daemon::logging::init(&config.log_level, config.log_format) {
        Ok(handle) => handle,
        Err(error) => {
            eprintln!("{error:#}");
            return ExitCode::FAILURE;
        }
    };
    let workers = match config.threads {
        0 => daemon::default_workers(),
        threads => threads,
    };
    let options = daemon::Options {
        sources,
        log_filter: Some(log_filter),
    };
    match run(config, workers, options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration sources: the file, the `TURN_RELAY_*` environment, and the command
/// line's options (which win).
fn sources(args: &RelayArgs) -> Sources {
    let mut sources = Sources::from_process(args.config.clone());
    if !args.listen.is_empty() {
        let listen: Vec<String> = args.listen.iter().map(ToString::to_string).collect();
        sources.set("--listen", "server.listen", listen.join(","));
    }
    if let Some(realm) = &args.realm {
        sources.set("--realm", "server.realm", realm);
    }
    if let Some(level) = &args.log_level {
        sources.set("--log-level", "log.level", level);
    }
    if let Some(format) = &args.log_format {
        sources.set("--log-format", "log.format", format);
    }
    if let Some(threads) = args.threads {
        sources.set("--threads", "server.threads", threads.to_string());
    }
    if args.exit_when_drained {
        sources.set("--exit-when-drained", "server.drain_exit", "true");
    }
    sources
}

fn run(config: Config, workers: usize, options: daemon::Options) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let shutdown = shutdown_signal().context("installing signal handlers")?;
        daemon::run(config, workers, options, shutdown).await
    })
}

/// Resolves with the name of the first SIGTERM or SIGINT.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        }
    })
}
