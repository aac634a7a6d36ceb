//! The `turn-relay` daemon as a child process in the relay namespace, and its metrics.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::addresses::METRICS_ADDRESS;
use crate::config::RelayConfig;
use crate::netns::Namespace;
use crate::privilege::unique_name;
use crate::process::{run_bounded, Background};

/// How long the daemon may take to bind its listeners.
const START_LIMIT: Duration = Duration::from_secs(20);

/// The workspace root (this crate lives in `<root>/tests/testkit`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Cargo's target directory (honours `CARGO_TARGET_DIR`).
pub fn target_directory() -> PathBuf {
    let root = workspace_root();
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |dir| root.join(dir))
}

/// The debug `turn-relay` binary, built (or brought up to date) once per test process:
/// `cargo test` builds binaries only for the package under test, not for the test
/// crates, and cargo releases its build lock before running tests, so building here
/// works. `TURN_RELAY_BIN` overrides the path (and skips the build).
pub fn daemon_binary() -> Result<PathBuf> {
    static BINARY: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(|| locate_or_build_daemon().map_err(|error| format!("{error:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn locate_or_build_daemon() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("TURN_RELAY_BIN") {
        return Ok(PathBuf::from(path));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let build = run_bounded(
        Command::new(cargo).current_dir(workspace_root()).args([
            "build",
            "-p",
            "turn-userspace",
            "--bin",
            "turn-relay",
        ]),
        Duration::from_secs(1800),
    )?;
    ensure!(
        build.succeeded(),
        "building turn-relay failed ({:?}):\n{}",
        build.status,
        build.stderr
    );
    let binary = target_directory().join("debug").join("turn-relay");
    ensure!(
        binary.exists(),
        "{} missing after the build",
        binary.display()
    );
    Ok(binary)
}

/// Where a daemon keeps its configuration and log.
pub struct Files {
    pub directory: PathBuf,
    /// The stem of `<stem>.toml` and `<stem>.log`.
    pub stem: String,
    /// Remove the directory when the daemon stops (tests), or keep it (the benchmark).
    pub keep: bool,
}

impl Files {
    /// A fresh directory under the system's temporary directory, removed afterwards.
    pub fn temporary() -> Files {
        Files {
            directory: std::env::temp_dir().join(unique_name("daemon")),
            stem: "turn-relay".into(),
            keep: false,
        }
    }
}

/// How the daemon process starts, besides its configuration file.
#[derive(Clone, Debug, Default)]
pub struct Launch {
    /// Environment variables (e.g. `TURN_RELAY_*` overrides).
    pub env: Vec<(String, String)>,
    /// Command-line arguments after `--config <file>`.
    pub args: Vec<String>,
    /// Run as `nobody` with only these capabilities (`setpriv` names: `bpf`,
    /// `net_admin`…), ambient so the daemon keeps them; None runs it as root.
    pub capabilities: Option<Vec<&'static str>>,
}

/// The unprivileged user the daemon runs as with [`Launch::capabilities`].
const NOBODY: &str = "65534";

/// The `turn-relay` daemon running in the relay namespace. Stopped (SIGTERM, then
/// SIGKILL) on drop; its metrics and log are printed when the thread is panicking.
pub struct Daemon {
    relay: Namespace,
    process: Background,
    files: Files,
    config_path: PathBuf,
    log_path: PathBuf,
}

impl Daemon {
    /// The debug daemon with `config`, in a temporary directory.
    pub fn start(relay: &Namespace, config: &RelayConfig) -> Result<Daemon> {
        Daemon::start_with(relay, config, &Launch::default())
    }

    /// The debug daemon with `config`, started as `launch` says.
    pub fn start_with(relay: &Namespace, config: &RelayConfig, launch: &Launch) -> Result<Daemon> {
        Daemon::launch_with(relay, config, &daemon_binary()?, Files::temporary(), launch)
    }

    /// Writes `config` into `files`, starts `binary` with it and waits until every
    /// listener is bound.
    pub fn launch(
        relay: &Namespace,
        config: &RelayConfig,
        binary: &Path,
        files: Files,
    ) -> Result<Daemon> {
        Daemon::launch_with(relay, config, binary, files, &Launch::default())
    }

    /// [`Daemon::launch`], started as `launch` says.
    pub fn launch_with(
        relay: &Namespace,
        config: &RelayConfig,
        binary: &Path,
        files: Files,
        launch: &Launch,
    ) -> Result<Daemon> {
        ensure!(
            binary.exists(),
            "{} does not exist (cargo xtask build builds it)",
            binary.display()
        );
        fs::create_dir_all(&files.directory)
            .with_context(|| format!("creating {}", files.directory.display()))?;
        let config_path = files.directory.join(format!("{}.toml", files.stem));
        fs::write(&config_path, config.to_toml())
            .with_context(|| format!("writing {}", config_path.display()))?;
        let log_path = files.directory.join(format!("{}.log", files.stem));
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let log_for_stderr = log
            .try_clone()
            .with_context(|| format!("duplicating {}", log_path.display()))?;
        let mut command = match &launch.capabilities {
            None => relay.command(&binary.to_string_lossy()),
            Some(capabilities) => {
                let set: String = capabilities
                    .iter()
                    .map(|capability| format!(",+{capability}"))
                    .collect();
                let mut command = relay.command("setpriv");
                command
                    .arg(format!("--reuid={NOBODY}"))
                    .arg(format!("--regid={NOBODY}"))
                    .arg("--clear-groups")
                    .arg(format!("--inh-caps=-all{set}"))
                    .arg(format!("--ambient-caps=-all{set}"))
                    .arg(format!("--bounding-set=-all{set}"))
                    .arg(binary);
                command
            }
        };
        command
            .env("NO_COLOR", "1")
            .envs(launch.env.iter().map(|(name, value)| (name, value)))
            .arg("--config")
            .arg(&config_path)
            .args(&launch.args);
        let process =
            Background::spawn(&mut command, Stdio::from(log), Stdio::from(log_for_stderr))?;
        let mut daemon = Daemon {
            relay: relay.clone(),
            process,
            files,
            config_path,
            log_path,
        };
        for listener in config.listeners() {
            let ready = relay
                .wait_for_udp_socket(listener, START_LIMIT, || daemon.process.ensure_running());
            if let Err(error) = ready {
                bail!(
                    "daemon did not come up: {error:#}\n--- daemon log ---\n{}",
                    daemon.log()
                );
            }
        }
        for listener in config
            .tcp_listeners()
            .into_iter()
            .chain(config.tls_listeners())
        {
            let ready = relay
                .wait_for_tcp_listener(listener, START_LIMIT, || daemon.process.ensure_running());
            if let Err(error) = ready {
                bail!(
                    "daemon did not come up: {error:#}\n--- daemon log ---\n{}",
                    daemon.log()
                );
            }
        }
        Ok(daemon)
    }

    /// The daemon's process id (for CPU accounting).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The configuration file it was started with (rewrite it, then reload).
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Sends `signal` (SIGHUP reloads, SIGUSR1 drains).
    pub fn signal(&self, signal: libc::c_int) -> Result<()> {
        self.process.signal(signal)
    }

    /// Waits up to `limit` for the daemon to exit by itself (e.g. once drained).
    pub fn wait_for_exit(&mut self, limit: Duration) -> Result<Option<std::process::ExitStatus>> {
        self.process.wait_for_exit(limit)
    }

    /// `<method> <path>` on the admin endpoint: status code and body.
    pub fn admin(&self, method: &str, path: &str) -> Result<(u16, String)> {
        let (status, _, body) = self.relay.http(METRICS_ADDRESS, method, path)?;
        Ok((status, body))
    }

    /// The daemon's log once `wanted` holds for it, or an error with the log after `limit`.
    pub fn log_when(&self, limit: Duration, wanted: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = Instant::now() + limit;
        loop {
            let log = self.log();
            if wanted(&log) {
                return Ok(log);
            }
            ensure!(
                Instant::now() < deadline,
                "the daemon log did not show what was expected within {limit:?}:\n{log}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Everything the daemon printed so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The Prometheus text of the daemon's `/metrics` endpoint.
    pub fn metrics(&self) -> Result<Metrics> {
        self.relay
            .http_get(METRICS_ADDRESS, "/metrics")
            .map(Metrics)
            .with_context(|| format!("--- daemon log ---\n{}", self.log()))
    }

    /// The daemon's metrics once `settled` holds for them, or the last reading after
    /// `limit`: the daemon publishes its counters periodically (every second), so a
    /// reading right after traffic may lag behind it.
    pub fn metrics_when(
        &self,
        limit: Duration,
        mut settled: impl FnMut(&Metrics) -> bool,
    ) -> Result<Metrics> {
        let deadline = Instant::now() + limit;
        loop {
            let metrics = self.metrics()?;
            if settled(&metrics) || Instant::now() >= deadline {
                return Ok(metrics);
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Fails (with the log) if the daemon has exited, e.g. crashed during the test.
    pub fn ensure_running(&mut self) -> Result<()> {
        self.process
            .ensure_running()
            .with_context(|| format!("--- daemon log ---\n{}", self.log()))
    }

    /// Stops the daemon (it logs its totals on the way out) and returns its log.
    pub fn stop(mut self) -> String {
        self.process.stop();
        self.log()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if thread::panicking() {
            // Read while the daemon still runs: its counters show where packets went.
            match self.relay.http_get(METRICS_ADDRESS, "/metrics") {
                Ok(metrics) => eprintln!("--- turn-relay metrics ---\n{metrics}"),
                Err(error) => eprintln!("--- turn-relay metrics unavailable: {error:#}"),
            }
        }
        // Stopped before the log is read, so the log is complete.
        self.process.stop();
        if thread::panicking() {
            eprintln!("--- turn-relay log ---\n{}--- end of log ---", self.log());
        }
        if !self.files.keep {
            let _ = fs::remove_dir_all(&self.files.directory);
        }
    }
}

/// A Prometheus text exposition.
pub struct Metrics(pub String);

impl Metrics {
    /// The sum over all series of `name` (any labels), or None when no series exists.
    pub fn sum(&self, name: &str) -> Option<f64> {
        self.sum_with_label(name, "")
    }

    /// The sum over the series of `name` whose labels include `label` (`key="value"`;
    /// empty matches every series), or None when no such series exists.
    pub fn sum_with_label(&self, name: &str, label: &str) -> Option<f64> {
        let mut total = None;
        for line in self.0.lines().filter(|line| !line.starts_with('#')) {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            let value = if let Some(labelled) = rest.strip_prefix('{') {
                labelled
                    .rsplit_once('}')
                    .filter(|(labels, _)| {
                        labels.split(',').any(|pair| pair == label) || label.is_empty()
                    })
                    .map(|(_, value)| value)
            } else if rest.starts_with(' ') && label.is_empty() {
                Some(rest)
            } else {
                None
            };
            let Some(value) = value
                .and_then(|value| value.split_whitespace().next())
                .and_then(|value| value.parse::<f64>().ok())
            else {
                continue;
            };
            total = Some(total.unwrap_or(0.0) + value);
        }
        total
    }

    /// `turn_xdp_packets_total{outcome="<outcome>"}`, 0 when absent.
    pub fn xdp_packets(&self, outcome: &str) -> u64 {
        self.sum_with_label("turn_xdp_packets_total", &format!("outcome=\"{outcome}\""))
            .unwrap_or(0.0) as u64
    }

    /// `turn_userspace_relayed_packets_total`, one direction (`to_peer`, `to_client`) or
    /// both (""), 0 when absent.
    pub fn userspace_relayed(&self, direction: &str) -> u64 {
        let label = if direction.is_empty() {
            String::new()
        } else {
            format!("direction=\"{direction}\"")
        };
        self.sum_with_label("turn_userspace_relayed_packets_total", &label)
            .unwrap_or(0.0) as u64
    }

    /// The samples whose name mentions XDP and whose value is not 0.
    pub fn nonzero_xdp_samples(&self) -> Vec<String> {
        self.0
            .lines()
            .filter(|line| {
                !line.starts_with('#')
                    && line.to_ascii_lowercase().contains("xdp")
                    && !line.ends_with(" 0")
            })
            .map(str::to_owned)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_series_are_summed_across_labels() {
        let metrics = Metrics(
            "# HELP relayed_packets_total Relayed.\n\
             # TYPE relayed_packets_total counter\n\
             relayed_packets_total{direction=\"to_peer\"} 3\n\
             relayed_packets_total{direction=\"to_client\"} 4\n\
             relayed_packets_total_other 100\n\
             allocations 2\n"
                .into(),
        );
        assert_eq!(metrics.sum("relayed_packets_total"), Some(7.0));
        assert_eq!(metrics.sum("allocations"), Some(2.0));
        assert_eq!(metrics.sum("missing"), None);
        assert_eq!(
            metrics.sum_with_label("relayed_packets_total", "direction=\"to_client\""),
            Some(4.0)
        );
        assert_eq!(
            metrics.sum_with_label("relayed_packets_total", "direction=\"sideways\""),
            None
        );
    }

    #[test]
    fn xdp_and_userspace_counters_are_read_by_outcome_and_direction() {
        let metrics = Metrics(
            "turn_xdp_attached 1\n\
             turn_xdp_packets_total{outcome=\"relayed_send_to_peer\"} 5\n\
             turn_xdp_packets_total{outcome=\"pass_stun\"} 0\n\
             turn_userspace_relayed_packets_total{direction=\"to_peer\",kind=\"channel_data\"} 2\n\
             turn_userspace_relayed_packets_total{direction=\"to_client\",kind=\"channel_data\"} 3\n"
                .into(),
        );
        assert_eq!(metrics.xdp_packets("relayed_send_to_peer"), 5);
        assert_eq!(metrics.xdp_packets("drop_no_permission"), 0);
        assert_eq!(metrics.userspace_relayed("to_client"), 3);
        assert_eq!(metrics.userspace_relayed(""), 5);
        assert_eq!(
            metrics.nonzero_xdp_samples(),
            [
                "turn_xdp_attached 1",
                "turn_xdp_packets_total{outcome=\"relayed_send_to_peer\"} 5"
            ]
        );
    }
}
