//! The files an operator installs: the systemd unit, the Debian package built by
//! `cargo xtask package`, the Containerfile and the Kubernetes DaemonSet. No container
//! engine or cluster exists here, so the container files are parsed and their
//! configuration is run through the daemon's own `--check-config`.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use turn_testkit::daemon::{daemon_binary, workspace_root};
use turn_testkit::privilege::unique_name;
use turn_testkit::process::run;
use turn_testkit::{privileged, OrFail};

/// The capabilities the daemon needs (`turn_relay_runs_unprivileged_with_its_capabilities`
/// in `operations.rs` shows each is needed and enough), as systemd spells them.
const CAPABILITIES: [&str; 4] = [
    "CAP_BPF",
    "CAP_PERFMON",
    "CAP_NET_ADMIN",
    "CAP_NET_BIND_SERVICE",
];

fn config_file(name: &str) -> PathBuf {
    workspace_root().join("config").join(name)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).or_fail(&format!("reading {}", path.display()))
}

/// `Key=value` lines of one `[section]` of a systemd unit.
fn unit_values(unit: &str, section: &str, key: &str) -> Vec<String> {
    let mut current = String::new();
    let mut values = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            current = line.trim_matches(['[', ']']).to_owned();
        } else if current == section {
            if let Some(value) = line.strip_prefix(&format!("{key}=")) {
                values.push(value.to_owned());
            }
        }
    }
    values
}

fn capability_set(text: &str) -> BTreeSet<String> {
    text.split([' ', ','])
        .filter(|word| !word.is_empty())
        .map(|word| {
            let upper = word.to_uppercase();
            if upper.starts_with("CAP_") {
                upper
            } else {
                format!("CAP_{upper}")
            }
        })
        .collect()
}

fn required_capabilities() -> BTreeSet<String> {
    CAPABILITIES.iter().map(|cap| (*cap).to_owned()).collect()
}

#[test]
fn the_systemd_unit_is_a_notify_service_with_only_the_needed_capabilities() {
    let unit = read(&config_file("turn-relay.service"));
    let value = |key: &str| unit_values(&unit, "Service", key);
    assert_eq!(value("Type"), ["notify"]);
    assert_eq!(value("User"), ["turn-relay"], "a dedicated user, not root");
    assert_eq!(value("ExecReload"), ["/bin/kill -HUP $MAINPID"]);
    assert_eq!(value("NoNewPrivileges"), ["yes"]);
    assert!(
        !value("WatchdogSec").is_empty(),
        "the daemon pings the watchdog"
    );
    for key in ["AmbientCapabilities", "CapabilityBoundingSet"] {
        let set = capability_set(&value(key).join(" "));
        assert_eq!(set, required_capabilities(), "{key}");
    }
    for hardening in [
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
    ] {
        assert!(!value(hardening).is_empty(), "{hardening} missing");
    }
    let sysusers = read(&config_file("turn-relay.sysusers"));
    assert!(
        sysusers
            .lines()
            .any(|line| line.starts_with("u turn-relay ")),
        "{sysusers}"
    );
}

/// A scratch root for dpkg: its database and log, nothing else.
struct ScratchRoot {
    path: PathBuf,
}

impl ScratchRoot {
    fn new() -> Result<ScratchRoot> {
        let path = std::env::temp_dir().join(unique_name("dpkg-root"));
        for directory in [
            "var/lib/dpkg/info",
            "var/lib/dpkg/updates",
            "var/log",
            "etc",
        ] {
            fs::create_dir_all(path.join(directory))?;
        }
        for file in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
            fs::write(path.join(file), "")?;
        }
        Ok(ScratchRoot { path })
    }

    /// `dpkg --root` with maintainer scripts run outside a chroot and `DPKG_ROOT` set
    /// (the scratch root has no shell of its own), and the dependencies (libc6,
    /// systemd-sysusers) taken from this host, where the scripts run.
    fn dpkg(&self, args: &[&str]) -> Result<String> {
        let root = self.path.to_string_lossy().into_owned();
        run(Command::new("dpkg")
            .args([
                "--root",
                &root,
                "--force-script-chrootless",
                "--force-depends",
                "--log=/dev/null",
            ])
            .args(args))
    }
}

impl Drop for ScratchRoot {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// The package `cargo xtask package` built: `TURN_RELAY_DEB`, else the newest under
/// `target/package`. `cargo xtask test` builds it before the tests.
fn built_package() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TURN_RELAY_DEB") {
        return Some(PathBuf::from(path));
    }
    let directory = turn_testkit::daemon::target_directory().join("package");
    fs::read_dir(directory)
        .ok()?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .max_by_key(|path| fs::metadata(path).and_then(|m| m.modified()).ok())
}

#[test]
fn the_package_installs_checks_its_configuration_and_purges() {
    if !privileged("the_package_installs_checks_its_configuration_and_purges") {
        return;
    }
    let Some(deb) = built_package() else {
        if std::env::var("CI").is_ok_and(|value| value == "true") {
            panic!("no .deb under target/package: `cargo xtask test` builds it with `cargo xtask package`");
        }
        eprintln!("skipping: no .deb under target/package (run `cargo xtask package`)");
        return;
    };
    let root = ScratchRoot::new().or_fail("creating a scratch root");
    let deb = deb.to_string_lossy().into_owned();
    root.dpkg(&["-i", &deb]).or_fail("dpkg -i");

    let at = |path: &str| root.path.join(path);
    for file in [
        "usr/bin/turn-relay",
        "lib/systemd/system/turn-relay.service",
        "usr/lib/sysusers.d/turn-relay.conf",
        "etc/turn-relay/turn-relay.toml",
        "usr/share/doc/turn-relay/README.md",
    ] {
        assert!(at(file).exists(), "{file} not installed");
    }
    // postinst created the user in the scratch root and let it (only) read the config.
    let group = read(&at("etc/group"));
    let gid: u32 = group
        .lines()
        .find_map(|line| line.strip_prefix("turn-relay:x:"))
        .and_then(|rest| rest.split(':').next()?.parse().ok())
        .or_fail("the turn-relay group in the scratch root's /etc/group");
    assert!(read(&at("etc/passwd")).contains("turn-relay:x:"));
    let config = fs::metadata(at("etc/turn-relay/turn-relay.toml")).or_fail("config metadata");
    assert_eq!(config.permissions().mode() & 0o777, 0o640);
    assert_eq!((config.uid(), config.gid()), (0, gid));

    let checked = run(Command::new(at("usr/bin/turn-relay"))
        .arg("--config")
        .arg(at("etc/turn-relay/turn-relay.toml"))
        .arg("--check-config"))
    .or_fail("--check-config of the installed configuration");
    assert!(checked.starts_with("config OK:"), "{checked}");

    // systemd's own check of the unit as installed, with its commands pointing into the
    // scratch root (verify insists that they exist and are executable).
    let installed_unit = read(&at("lib/systemd/system/turn-relay.service"));
    let checked_unit = root.path.join("turn-relay.service");
    fs::write(
        &checked_unit,
        installed_unit.replace(
            "/usr/bin/turn-relay",
            &at("usr/bin/turn-relay").to_string_lossy(),
        ),
    )
    .or_fail("writing the unit to verify");
    let verified = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&checked_unit)
        .output()
        .or_fail("running systemd-analyze verify");
    let complaints = String::from_utf8_lossy(&verified.stderr).into_owned();
    assert!(
        verified.status.success() && !complaints.contains("turn-relay"),
        "systemd-analyze verify: {complaints}"
    );

    root.dpkg(&["--purge", "turn-relay"])
        .or_fail("dpkg --purge");
    for gone in ["usr/bin/turn-relay", "etc/turn-relay"] {
        assert!(!at(gone).exists(), "{gone} left after purge");
    }
}

/// The instructions of a Containerfile, continuation lines joined.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    joined
        .into_iter()
        .filter_map(|instruction| {
            let (name, rest) = instruction.split_once(' ')?;
            Some((name.to_uppercase(), rest.trim().to_owned()))
        })
        .collect()
}

/// `--check-config` with `variables` (and no file): the environment alone configures it.
fn check_with_environment(variables: &[(String, String)]) -> Result<String> {
    let mut command = Command::new(daemon_binary()?);
    command.env_clear().arg("--check-config");
    for (name, value) in variables {
        command.env(name, value);
    }
    let output = command
        .output()
        .context("running turn-relay --check-config")?;
    ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn the_containerfile_runs_unprivileged_configured_by_the_environment() {
    let text = read(&config_file("Containerfile"));
    let instructions = instructions(&text);
    let all = |name: &str| -> Vec<&String> {
        instructions
            .iter()
            .filter(|(instruction, _)| instruction == name)
            .map(|(_, rest)| rest)
            .collect()
    };
    let user = all("USER");
    assert_eq!(user.len(), 1, "{instructions:?}");
    let uid: u32 = user[0]
        .split(':')
        .next()
        .and_then(|uid| uid.parse().ok())
        .or_fail("a numeric USER (so runAsNonRoot can be checked)");
    assert_ne!(uid, 0, "USER is root");
    assert_eq!(all("ENTRYPOINT"), [&"[\"/usr/bin/turn-relay\"]".to_owned()]);
    // The file capabilities are exactly the unit's.
    let run = all("RUN")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    let setcap = run
        .split("setcap ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|caps| caps.strip_suffix("=ep"))
        .or_fail("setcap <caps>=ep in a RUN");
    assert_eq!(capability_set(setcap), required_capabilities());
    // Its environment, with the relay address a deployment adds, is a valid configuration.
    let mut variables: Vec<(String, String)> = all("ENV")
        .iter()
        .flat_map(|line| line.split_whitespace())
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    assert!(variables
        .iter()
        .all(|(name, _)| name.starts_with("TURN_RELAY_")));
    variables.push((
        "TURN_RELAY_SERVER_RELAY_ADDRESS".into(),
        "198.18.0.1".into(),
    ));
    let checked = check_with_environment(&variables).or_fail("the Containerfile's environment");
    assert!(checked.starts_with("config OK: environment"), "{checked}");
}

#[test]
fn the_daemonset_uses_host_network_capabilities_readiness_and_a_draining_pre_stop() {
    let text = read(&config_file("kubernetes/turn-relay-daemonset.yaml"));
    let document: serde_yaml::Value = serde_yaml::from_str(&text).or_fail("DaemonSet YAML");
    let at = |path: &[&str]| -> serde_yaml::Value {
        let mut value = &document;
        for key in path {
            value = match key.parse::<usize>() {
                Ok(index) => &value[index],
                Err(_) => &value[*key],
            };
        }
        value.clone()
    };
    assert_eq!(at(&["apiVersion"]).as_str(), Some("apps/v1"));
    assert_eq!(at(&["kind"]).as_str(), Some("DaemonSet"));
    let selector = at(&["spec", "selector", "matchLabels"]);
    assert_eq!(selector, at(&["spec", "template", "metadata", "labels"]));
    let pod = ["spec", "template", "spec"];
    assert_eq!(
        at(&[&pod[..], &["hostNetwork"]].concat()).as_bool(),
        Some(true)
    );
    let container = [&pod[..], &["containers", "0"]].concat();
    let field = |path: &[&str]| at(&[&container[..], path].concat());
    let added: BTreeSet<String> = field(&["securityContext", "capabilities", "add"])
        .as_sequence()
        .or_fail("capabilities.add")
        .iter()
        .filter_map(|cap| cap.as_str())
        .map(|cap| format!("CAP_{cap}"))
        .collect();
    assert_eq!(added, required_capabilities());
    assert_eq!(
        field(&["securityContext", "capabilities", "drop", "0"]).as_str(),
        Some("ALL")
    );
    assert_eq!(
        field(&["securityContext", "runAsNonRoot"]).as_bool(),
        Some(true)
    );
    assert_eq!(
        field(&["readinessProbe", "httpGet", "path"]).as_str(),
        Some("/readyz")
    );
    assert_eq!(
        field(&["livenessProbe", "httpGet", "path"]).as_str(),
        Some("/healthz")
    );
    let pre_stop = serde_yaml::to_string(&field(&["lifecycle", "preStop", "exec", "command"]))
        .or_fail("preStop command");
    assert!(pre_stop.contains("turn-relay ctl drain"), "{pre_stop}");
    // Its environment (downward API and secrets filled in) is a valid configuration.
    let variables: Vec<(String, String)> = field(&["env"])
        .as_sequence()
        .or_fail("env")
        .iter()
        .filter_map(|entry| {
            let name = entry["name"].as_str()?.to_owned();
            if !name.starts_with("TURN_RELAY_") {
                return None;
            }
            let value = match entry["value"].as_str() {
                Some(value) => value.replace("$(NODE_IP)", "198.18.0.1"),
                None => format!("secret-for-{name}"),
            };
            Some((name, value))
        })
        .collect();
    let checked = check_with_environment(&variables).or_fail("the DaemonSet's environment");
    assert!(checked.starts_with("config OK: environment"), "{checked}");
}
