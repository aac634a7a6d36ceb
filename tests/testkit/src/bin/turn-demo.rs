//! turn-demo (`cargo xtask demo`): the XDP fast path at work on one machine.
//!
//! Builds client, relay and peer network namespaces, starts the relay with XDP in native
//! mode on its two veths, drives coturn's `turnutils_uclient` through it (ChannelData,
//! then Send/Data indications, round after round) to `turnutils_peer`, and prints once a
//! second how many packets each path relayed, read from the daemon's metrics endpoint.
//! Ends after `--seconds`, on Ctrl-C or on a failure; the namespaces and processes are
//! removed in every case. Needs root.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::Parser;
use turn_testkit::addresses::{OUTER_INTERFACE, PEER_V4};
use turn_testkit::config::{RelayConfig, User, Xdp};
use turn_testkit::coturn::{start_peer, Credentials, Uclient};
use turn_testkit::daemon::{Daemon, Files, Metrics};
use turn_testkit::privilege::is_root;
use turn_testkit::topology::Topology;
use turn_testkit::xdp::{StubAction, StubXdp};

/// The XDP program's relay outcomes, as the metrics label them.
const XDP_OUTCOMES: [&str; 4] = [
    "relayed_channel_data_to_peer",
    "relayed_send_to_peer",
    "relayed_channel_data_to_client",
    "relayed_data_indication_to_client",
];

#[derive(Parser)]
#[command(about = "Show the XDP fast path relaying a real TURN client's traffic")]
struct Options {
    /// The release turn-relay daemon.
    #[arg(long)]
    relay_binary: PathBuf,
    /// How long the client keeps sending (5–600 s).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
}

fn main() -> Result<()> {
    let options = Options::parse();
    ensure!(
        is_root(),
        "turn-demo needs root (network namespaces, XDP): run it through `cargo xtask demo` as root"
    );
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&interrupted))
            .context("installing the Ctrl-C handler")?;
    }
    let duration = Duration::from_secs(options.seconds.clamp(5, 600));
    let result = demo(&options.relay_binary, duration, &interrupted);
    if interrupted.load(Ordering::Relaxed) {
        println!("interrupted: namespaces and processes removed");
    }
    result
}

fn demo(
    relay_binary: &std::path::Path,
    duration: Duration,
    interrupted: &AtomicBool,
) -> Result<()> {
    println!("==> client, relay and peer namespaces (198.18.1.0/24 ⇄ relay ⇄ 198.19.1.0/24)");
    let topology = Topology::new().context("building the namespaces")?;
    // The relay's XDP program redirects into these veths; they need an XDP program too.
    let _stubs = [
        StubXdp::attach(&topology.client, OUTER_INTERFACE, StubAction::Pass)?,
        StubXdp::attach(&topology.peer, OUTER_INTERFACE, StubAction::Pass)?,
    ];
    let _peer = start_peer(&topology.peer, PEER_V4.into()).context("starting turnutils_peer")?;
    let user = User::new("demo", &format!("demo-{:08x}", rand::random::<u32>()));
    let config = RelayConfig::new(Xdp::Native).with_user(&user.name, &user.password);
    println!("==> turn-relay with XDP in native mode on to-client and to-peer");
    let daemon = Daemon::launch(&topology.relay, &config, relay_binary, Files::temporary())
        .context("starting turn-relay")?;
    if let Some(line) = daemon.log().lines().find(|line| line.contains("XDP")) {
        println!("    {}", line.trim());
    }

    println!("==> turnutils_uclient → relay → turnutils_peer for {duration:?} (Ctrl-C stops)");
    let client = topology.client.handle();
    let deadline = Instant::now() + duration;
    let traffic = thread::spawn(move || -> Result<u64> {
        let mut rounds = 0u64;
        while Instant::now() < deadline {
            let uclient = Uclient {
                clients: 2,
                messages: 400,
                send_interval_ms: Some(5),
                send_indications: rounds % 2 == 1,
                time_limit: Duration::from_secs(30),
                ..Uclient::new(Credentials::from(&user))
            };
            uclient.run(&client)?.ensure_lossless(400)?;
            rounds += 1;
        }
        Ok(rounds)
    });

    println!(
        "{:>5}  {:>14} {:>14} {:>14} {:>14}   {:>11} {:>11}",
        "s",
        "XDP cd→peer",
        "XDP send→peer",
        "XDP cd→client",
        "XDP data→cl.",
        "user→peer",
        "user→client"
    );
    let started = Instant::now();
    let mut last = None;
    while !traffic.is_finished() && !interrupted.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_secs(1));
        match daemon.metrics() {
            Ok(metrics) => {
                print_row(started.elapsed(), &metrics);
                last = Some(metrics);
            }
            Err(error) => println!("metrics unavailable: {error:#}"),
        }
    }
    if interrupted.load(Ordering::Relaxed) {
        return Ok(());
    }
    let rounds = traffic
        .join()
        .map_err(|_| anyhow::anyhow!("the client thread panicked"))?
        .context("turnutils_uclient")?;
    // The daemon publishes its counters about once a second.
    thread::sleep(Duration::from_millis(1500));
    let metrics = daemon.metrics().ok().or(last).context("no metrics")?;
    print_row(started.elapsed(), &metrics);
    let xdp: u64 = XDP_OUTCOMES
        .iter()
        .map(|outcome| metrics.xdp_packets(outcome))
        .sum();
    let userspace = metrics.userspace_relayed("");
    println!(
        "==> {rounds} uclient rounds without loss; XDP relayed {xdp} packets, userspace {userspace} ({:.1} % in the kernel)",
        100.0 * xdp as f64 / (xdp + userspace).max(1) as f64
    );
    Ok(())
}

fn print_row(elapsed: Duration, metrics: &Metrics) {
    let [cd_peer, send_peer, cd_client, data_client] =
        XDP_OUTCOMES.map(|outcome| metrics.xdp_packets(outcome));
    println!(
        "{:>5.0}  {cd_peer:>14} {send_peer:>14} {cd_client:>14} {data_client:>14}   {:>11} {:>11}",
        elapsed.as_secs_f64(),
        metrics.userspace_relayed("to_peer"),
        metrics.userspace_relayed("to_client"),
    );
}
