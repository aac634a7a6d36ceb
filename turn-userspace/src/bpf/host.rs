//! Host settings the fast path depends on, checked when the program is attached.
//!
//! The program resolves next hops with `bpf_fib_lookup` (flags 0), which answers
//! `BPF_FIB_LKUP_RET_FWD_DISABLED` unless forwarding is enabled on the frame's *ingress*
//! interface: `net.ipv4.conf.<if>.forwarding` for IPv4, `net.ipv6.conf.<if>.forwarding`
//! for IPv6 (the per-interface values decide; writing the `all` switch sets every
//! interface). The program then passes every frame to the stack, where userspace relays
//! it correctly but without acceleration — silently, so the daemon says so at start-up.
//! The daemon never changes sysctls itself: forwarding is a host policy decision (a
//! forwarding host should filter transit traffic, and IPv6 forwarding ignores router
//! advertisements unless `accept_ra=2`).

use std::fmt;
use std::path::{Path, PathBuf};

/// An IP version whose forwarding switch matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    fn sysctl_tree(self) -> &'static str {
        match self {
            IpFamily::V4 => "ipv4",
            IpFamily::V6 => "ipv6",
        }
    }
}

/// An interface the program is attached to whose forwarding switch is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardingDisabled {
    pub family: IpFamily,
    pub interface: String,
    /// The `all` switch of the same family, when readable.
    pub all_enabled: Option<bool>,
}

impl ForwardingDisabled {
    /// The sysctl name the host must set to 1 (`sysctl` spells a `.` inside an interface
    /// name, e.g. of a VLAN device, as `/`).
    pub fn sysctl(&self) -> String {
        forwarding_sysctl(self.family, &self.interface.replace('.', "/"))
    }
}

impl fmt::Display for ForwardingDisabled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=0", self.sysctl())
    }
}

fn forwarding_sysctl(family: IpFamily, interface: &str) -> String {
    format!("net.{}.conf.{interface}.forwarding", family.sysctl_tree())
}

/// Where the kernel exposes a forwarding switch under `/proc/sys`.
fn forwarding_path(family: IpFamily, interface: &str) -> PathBuf {
    Path::new("/proc/sys/net")
        .join(family.sysctl_tree())
        .join("conf")
        .join(interface)
        .join("forwarding")
}

/// The interfaces whose forwarding switch is off, per family, with `read` reading
/// `/proc/sys` files (`/proc/sys/net` shows the calling thread's network namespace). A family the interface does not run (no `/proc/sys` entry, or IPv6
/// disabled on it) is skipped: no frame of it can arrive there.
pub(crate) fn forwarding_disabled(
    interfaces: &[String],
    read: impl Fn(&Path) -> std::io::Result<String>,
) -> Vec<ForwardingDisabled> {
    let switch = |family: IpFamily, interface: &str| -> Option<bool> {
        let text = read(&forwarding_path(family, interface)).ok()?;
        Some(text.trim() != "0")
    };
    let ipv6_disabled = |interface: &str| {
        read(
            &Path::new("/proc/sys/net/ipv6/conf")
                .join(interface)
                .join("disable_ipv6"),
        )
        .map(|text| text.trim() == "1")
        .unwrap_or(true)
    };
    let mut disabled = Vec::new();
    for family in [IpFamily::V4, IpFamily::V6] {
        for interface in interfaces {
            if family == IpFamily::V6 && ipv6_disabled(interface) {
                continue;
            }
            if switch(family, interface) == Some(false) {
                disabled.push(ForwardingDisabled {
                    family,
                    interface: interface.clone(),
                    all_enabled: switch(family, "all"),
                });
            }
        }
    }
    disabled
}

/// One line for the status: what is off, what it costs, what to set.
pub(crate) fn forwarding_warning(disabled: &[ForwardingDisabled]) -> Option<String> {
    if disabled.is_empty() {
        return None;
    }
    let settings: Vec<String> = disabled.iter().map(ToString::to_string).collect();
    let mut fixes: Vec<String> = Vec::new();
    for family in [IpFamily::V4, IpFamily::V6] {
        let off: Vec<&ForwardingDisabled> = disabled
            .iter()
            .filter(|entry| entry.family == family)
            .collect();
        let Some(first) = off.first() else { continue };
        let all = forwarding_sysctl(family, "all");
        let each: Vec<String> = off
            .iter()
            .map(|entry| format!("{}=1", entry.sysctl()))
            .collect();
        fixes.push(match first.all_enabled {
            // `all` was set before these interfaces existed, or they were turned off since.
            Some(true) => each.join(", "),
            _ => format!("{} (or {all}=1)", each.join(", ")),
        });
    }
    Some(format!(
        "WARNING: {} — the fast path cannot resolve next hops (bpf_fib_lookup: forwarding \
         disabled), so every frame arriving there falls back to userspace; set {} \
         (the daemon does not change sysctls)",
        settings.join(", "),
        fixes.join(" and ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io;

    fn reader(values: &[(&str, &str)]) -> impl Fn(&Path) -> io::Result<String> {
        let values: HashMap<PathBuf, String> = values
            .iter()
            .map(|(path, value)| (PathBuf::from(path), format!("{value}\n")))
            .collect();
        move |path: &Path| {
            values
                .get(path)
                .cloned()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        }
    }

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn enabled_forwarding_gives_no_warning() {
        let read = reader(&[
            ("/proc/sys/net/ipv4/conf/eth0/forwarding", "1"),
            ("/proc/sys/net/ipv6/conf/eth0/forwarding", "1"),
            ("/proc/sys/net/ipv6/conf/eth0/disable_ipv6", "0"),
        ]);
        let disabled = forwarding_disabled(&names(&["eth0"]), read);
        assert_eq!(disabled, Vec::new());
        assert_eq!(forwarding_warning(&disabled), None);
    }

    #[test]
    fn disabled_forwarding_names_the_sysctls_to_set() {
        let read = reader(&[
            ("/proc/sys/net/ipv4/conf/all/forwarding", "0"),
            ("/proc/sys/net/ipv4/conf/eth0/forwarding", "0"),
            ("/proc/sys/net/ipv4/conf/eth1.100/forwarding", "1"),
            ("/proc/sys/net/ipv6/conf/all/forwarding", "1"),
            ("/proc/sys/net/ipv6/conf/eth0/forwarding", "1"),
            ("/proc/sys/net/ipv6/conf/eth0/disable_ipv6", "0"),
            ("/proc/sys/net/ipv6/conf/eth1.100/forwarding", "0"),
            ("/proc/sys/net/ipv6/conf/eth1.100/disable_ipv6", "0"),
        ]);
        let disabled = forwarding_disabled(&names(&["eth0", "eth1.100"]), read);
        assert_eq!(
            disabled,
            vec![
                ForwardingDisabled {
                    family: IpFamily::V4,
                    interface: "eth0".into(),
                    all_enabled: Some(false),
                },
                ForwardingDisabled {
                    family: IpFamily::V6,
                    interface: "eth1.100".into(),
                    all_enabled: Some(true),
                },
            ]
        );
        let warning = forwarding_warning(&disabled).expect("a warning");
        assert!(
            warning.starts_with(
                "WARNING: net.ipv4.conf.eth0.forwarding=0, net.ipv6.conf.eth1/100.forwarding=0 — "
            ),
            "{warning}"
        );
        assert!(warning.contains("falls back to userspace"), "{warning}");
        assert!(
            warning.contains(
                "set net.ipv4.conf.eth0.forwarding=1 (or net.ipv4.conf.all.forwarding=1) \
                 and net.ipv6.conf.eth1/100.forwarding=1 "
            ),
            "{warning}"
        );
    }

    #[test]
    fn families_an_interface_does_not_run_are_skipped() {
        let read = reader(&[
            ("/proc/sys/net/ipv4/conf/eth0/forwarding", "1"),
            ("/proc/sys/net/ipv6/conf/eth0/forwarding", "0"),
            ("/proc/sys/net/ipv6/conf/eth0/disable_ipv6", "1"),
        ]);
        assert_eq!(forwarding_disabled(&names(&["eth0"]), read), Vec::new());
        // No IPv6 tree at all (ipv6.disable=1 on the kernel command line).
        let read = reader(&[("/proc/sys/net/ipv4/conf/eth0/forwarding", "1")]);
        assert_eq!(forwarding_disabled(&names(&["eth0"]), read), Vec::new());
    }
}
