//! Scale and memory (`turn-bench scale`, issue 11 item 6): ours with XDP, N allocations
//! with one permission and one channel each set up through the real protocol
//! ([`control::open_flow`]), and what they cost: the daemon's resident memory
//! (`VmRSS` in `/proc/<pid>/status`) before and after, per allocation, next to the XDP
//! maps' kernel memory as the daemon logs it at start-up (preallocated for
//! `max_allocations`, so it does not grow with N).

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use turn_testkit::addresses::{listener, PEER_V4};
use turn_testkit::config::User;
use turn_testkit::daemon::{Daemon, Files, Launch};
use turn_testkit::netns::remove_stale_namespaces;
use turn_testkit::privilege::is_root;

use crate::bench::{Lab, FIRST_CHANNEL, SINK_PORT};
use crate::control;
use crate::interrupted;
use crate::servers::{our_config, RunningServer, ServerKind};

/// Options of `turn-bench scale`.
#[derive(clap::Args, Debug, Clone)]
pub struct ScaleOptions {
    /// Allocation counts to measure at, comma separated and cumulative (flows opened for
    /// the first count stay open for the next). One relayed IPv4 address offers the
    /// daemon's port range (16384 ports by default), so counts above it are refused.
    #[arg(long, value_delimiter = ',', default_values_t = [2_000usize, 5_000, 10_000])]
    pub allocations: Vec<usize>,
    /// The daemon's `server.max_allocations` (sizes the XDP maps; default: the largest count).
    #[arg(long)]
    pub max_allocations: Option<u32>,
    /// At most this many seconds for setting up all allocations; what fits is measured.
    #[arg(long, default_value_t = 120)]
    pub seconds: u64,
    /// Client threads opening flows in parallel.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// The turn-relay daemon (default: next to this binary).
    #[arg(long)]
    pub relay_binary: Option<PathBuf>,
    /// Where the daemon's config and log go.
    #[arg(long, default_value = "bench-results/scale")]
    pub out: PathBuf,
}

/// One measurement point.
struct Point {
    allocations: usize,
    setup_seconds: f64,
    rss_bytes: u64,
}

/// Runs the scale measurement and prints its table.
pub fn run(options: &ScaleOptions) -> Result<()> {
    if !is_root() {
        bail!("turn-bench scale needs root (network namespaces, XDP)");
    }
    let mut counts = options.allocations.clone();
    counts.sort_unstable();
    counts.dedup();
    let largest = *counts.last().context("--allocations is empty")?;
    let max_allocations = options
        .max_allocations
        .unwrap_or(u32::try_from(largest).unwrap_or(u32::MAX));
    ensure!(options.clients > 0, "--clients must be at least 1");
    // One descriptor per flow here and one relayed socket per allocation in the daemon,
    // which inherits this limit.
    let file_limit = raise_file_limit(largest as u64 + 1024)?;
    if file_limit < largest as u64 + 1024 {
        eprintln!(
            "turn-bench scale: the open-file limit is {file_limit} (hard): at most about \
             {} allocations fit",
            file_limit.saturating_sub(1024)
        );
    }
    let relay_binary = crate::relay_binary(options.relay_binary.as_deref())?;
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("creating {}", options.out.display()))?;

    remove_stale_namespaces();
    let lab = Lab::new(false)?;
    let user = User::new("bench", &format!("bench-{:016x}", rand::random::<u64>()));
    let mut config = our_config(ServerKind::OursXdp, &user);
    config.max_allocations = Some(max_allocations);
    let files = Files {
        directory: options.out.clone(),
        stem: format!("ours-xdp-{max_allocations}"),
        keep: true,
    };
    let daemon = Daemon::launch_with(
        &lab.topology.relay,
        &config,
        &relay_binary,
        files,
        &Launch::default(),
    )
    .context("starting ours-xdp")?;
    let server = RunningServer::Ours(daemon);
    server.wait_ready(ServerKind::OursXdp, &lab.topology)?;
    let pid = server.pid();
    let log_path = server.log_path().to_owned();
    for marker in ["XDP", "memory at", "open-file limit"] {
        if let Some(line) = log_lines(&log_path, marker).first() {
            println!("daemon: {line}");
        }
    }
    let idle_rss = rss_bytes(pid)?;
    let map_bytes = map_memory_bytes(&log_path);

    let flows: Mutex<Vec<UdpSocket>> = Mutex::new(Vec::with_capacity(largest));
    let failures = AtomicUsize::new(0);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(options.seconds);
    let mut points = Vec::new();
    let mut last_error = None;
    for &count in &counts {
        let error = open_flows(
            &lab,
            &user,
            count,
            options.clients,
            deadline,
            &flows,
            &failures,
        );
        let opened = flows.lock().map_or(0, |flows| flows.len());
        // Let the daemon finish applying the last fast-path entries.
        std::thread::sleep(Duration::from_millis(500));
        points.push(Point {
            allocations: opened,
            setup_seconds: start.elapsed().as_secs_f64(),
            rss_bytes: rss_bytes(pid)?,
        });
        eprintln!(
            "turn-bench scale: {opened} allocations after {:.1} s",
            start.elapsed().as_secs_f64()
        );
        if let Some(error) = error {
            last_error = Some(error);
            break;
        }
        if opened < count || interrupted() {
            break;
        }
    }
    let table = table(max_allocations, idle_rss, map_bytes, &points);
    println!("{table}");
    if let Some(error) = last_error {
        println!("stopped early: {error:#}");
    }
    let failed = failures.load(Ordering::Relaxed);
    if failed > 0 {
        println!("{failed} flows failed to open (see the daemon log)");
    }
    println!("daemon log: {}", log_path.display());
    drop(flows);
    drop(server);
    Ok(())
}

/// Opens flows on `threads` client threads until `flows` holds `count`, the deadline
/// passes, or too many fail; returns why it stopped early.
fn open_flows(
    lab: &Lab,
    user: &User,
    count: usize,
    threads: usize,
    deadline: Instant,
    flows: &Mutex<Vec<UdpSocket>>,
    failures: &AtomicUsize,
) -> Option<anyhow::Error> {
    /// More failures than this end the run (e.g. the port range is exhausted: 508).
    const FAILURE_LIMIT: usize = 100;
    let claimed = AtomicUsize::new(flows.lock().map_or(0, |flows| flows.len()));
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let peer = std::net::SocketAddr::new(PEER_V4.into(), SINK_PORT);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while Instant::now() < deadline
                    && !interrupted()
                    && failures.load(Ordering::Relaxed) < FAILURE_LIMIT
                    && claimed.fetch_add(1, Ordering::Relaxed) < count
                {
                    match control::open_flow(
                        &lab.topology.client,
                        listener(4),
                        user,
                        peer,
                        FIRST_CHANNEL,
                    ) {
                        Ok(flow) => {
                            // Only the client's socket stays open (its 5-tuple holds the
                            // allocation), one descriptor per flow.
                            if let Ok(mut flows) = flows.lock() {
                                flows.push(flow.into_socket());
                            }
                        }
                        Err(error) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            claimed.fetch_sub(1, Ordering::Relaxed);
                            if let Ok(mut first) = first_error.lock() {
                                first.get_or_insert(error);
                            }
                        }
                    }
                }
            });
        }
    });
    let error = first_error.into_inner().ok().flatten();
    if failures.load(Ordering::Relaxed) >= FAILURE_LIMIT {
        return error.map(|error| error.context(format!("{FAILURE_LIMIT} flows failed")));
    }
    None
}

/// The Markdown table of the measurement.
fn table(max_allocations: u32, idle_rss: u64, map_bytes: Option<u64>, points: &[Point]) -> String {
    let kib = |bytes: u64| bytes / 1024;
    // The maps hold at most MAX_FAST_PATH_ALLOCATIONS; the rest relay in userspace.
    let slots = max_allocations.clamp(1, turn_relay::bpf::MAX_FAST_PATH_ALLOCATIONS);
    let mut out = format!(
        "max_allocations = {max_allocations}; daemon RSS with no allocation: {} KiB; XDP maps: {}\n\n",
        kib(idle_rss),
        match map_bytes {
            Some(bytes) => format!(
                "{} KiB for {slots} allocation slots ({:.0} bytes per slot)",
                kib(bytes),
                bytes as f64 / f64::from(slots)
            ),
            None => "not logged".to_owned(),
        }
    );
    out.push_str(
        "| allocations (1 channel each) | set up after s | daemon RSS KiB | RSS growth bytes/allocation | marginal bytes/allocation |\n|---|---|---|---|---|\n",
    );
    let mut previous: Option<&Point> = None;
    for point in points {
        let growth = point.rss_bytes.saturating_sub(idle_rss);
        let per_allocation = growth as f64 / point.allocations.max(1) as f64;
        let marginal = match previous {
            Some(previous) if point.allocations > previous.allocations => format!(
                "{:.0}",
                (point.rss_bytes as f64 - previous.rss_bytes as f64)
                    / (point.allocations - previous.allocations) as f64
            ),
            _ => "–".to_owned(),
        };
        out.push_str(&format!(
            "| {} | {:.1} | {} | {per_allocation:.0} | {marginal} |\n",
            point.allocations,
            point.setup_seconds,
            kib(point.rss_bytes)
        ));
        previous = Some(point);
    }
    out
}

/// `VmRSS` of `pid`, in bytes.
fn rss_bytes(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vm_rss(&status).with_context(|| format!("no VmRSS in {path}"))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

/// The XDP maps' kernel memory from the daemon's start-up line "… maps take N KiB …".
fn map_memory_bytes(log_path: &Path) -> Option<u64> {
    log_lines(log_path, "maps take").iter().find_map(|line| {
        let after = line.split("maps take ").nth(1)?;
        let kib: u64 = after.split_whitespace().next()?.parse().ok()?;
        Some(kib * 1024)
    })
}

/// The daemon's log lines containing `marker`.
fn log_lines(log_path: &Path, marker: &str) -> Vec<String> {
    std::fs::read_to_string(log_path)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains(marker))
        .map(str::to_owned)
        .collect()
}

/// Raises this process's open-file limit (inherited by the daemon) toward `wanted`, up to
/// the hard limit (raising that needs CAP_SYS_RESOURCE); returns the limit now in force.
fn raise_file_limit(wanted: u64) -> Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid resource and a pointer to a live rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    if limit.rlim_cur >= wanted {
        return Ok(limit.rlim_cur);
    }
    limit.rlim_cur = wanted.min(limit.rlim_max);
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)");
    }
    Ok(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tturn-relay\nVmHWM:\t  9000 kB\nVmRSS:\t  8192 kB\n";
        assert_eq!(parse_vm_rss(status), Some(8192 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn the_table_reports_growth_per_allocation() {
        let points = [
            Point {
                allocations: 1000,
                setup_seconds: 1.0,
                rss_bytes: 11 << 20,
            },
            Point {
                allocations: 3000,
                setup_seconds: 3.0,
                rss_bytes: 13 << 20,
            },
        ];
        let table = table(4096, 10 << 20, Some(4 << 20), &points);
        assert!(
            table.contains("4096 KiB for 4096 allocation slots (1024 bytes per slot)"),
            "{table}"
        );
        assert!(
            table.contains("| 1000 | 1.0 | 11264 | 1049 | – |"),
            "{table}"
        );
        assert!(
            table.contains("| 3000 | 3.0 | 13312 | 1049 | 1049 |"),
            "{table}"
        );
    }
}
