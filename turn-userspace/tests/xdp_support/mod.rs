//! Shared by the XDP integration tests: root check, network namespaces with veth pairs
//! (198.18.0.0/15 and a 2001:db8::/64 documentation prefix, unique names, torn down by a
//! Drop guard), and running code inside a namespace.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// True when the test may run privileged steps. Without root the test is skipped,
/// unless CI=true, where a skip is a failure.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} needs root (CI=true: refusing to skip)");
    }
    eprintln!("skipping {test}: needs root");
    false
}

/// A name no other test (in this or a concurrent process) uses: `<prefix><pid><n>`, at
/// most 15 characters (IFNAMSIZ - 1).
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}{}{n}", std::process::id() % 1_000_000);
    assert!(name.len() <= 15, "interface name {name} too long");
    name
}

/// Runs a command, panicking with its output if it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("spawning {program} {args:?}: {error}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `ip -n <ns> <args>`.
pub fn ip_in(ns: &str, args: &[&str]) -> String {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// A network namespace, deleted (with its interfaces) on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(prefix: &str) -> NetNs {
        let name = unique_name(prefix);
        run("ip", &["netns", "add", &name]);
        let ns = NetNs { name };
        ip_in(&ns.name, &["link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Two namespaces joined by a veth pair: `a` (198.18.0.1, 2001:db8::1) ↔ `b`
/// (198.18.0.2, 2001:db8::2), both ends up, IPv6 DAD off.
pub struct VethPair {
    pub a: NetNs,
    pub b: NetNs,
    pub a_if: String,
    pub b_if: String,
}

pub const A_V4: &str = "198.18.0.1";
pub const B_V4: &str = "198.18.0.2";
pub const A_V6: &str = "2001:db8::1";
pub const B_V6: &str = "2001:db8::2";

impl VethPair {
    pub fn new() -> VethPair {
        let a = NetNs::new("xa");
        let b = NetNs::new("xb");
        let a_if = unique_name("va");
        let b_if = unique_name("vb");
        ip_in(
            &a.name,
            &[
                "link", "add", &a_if, "type", "veth", "peer", "name", &b_if, "netns", &b.name,
            ],
        );
        for (ns, interface, v4, v6) in [(&a, &a_if, A_V4, A_V6), (&b, &b_if, B_V4, B_V6)] {
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &ns.name,
                    "sysctl",
                    "-qw",
                    &format!("net.ipv6.conf.{interface}.accept_dad=0"),
                ],
            );
            ip_in(
                &ns.name,
                &["addr", "add", &format!("{v4}/24"), "dev", interface],
            );
            ip_in(
                &ns.name,
                &[
                    "addr",
                    "add",
                    &format!("{v6}/64"),
                    "dev",
                    interface,
                    "nodad",
                ],
            );
            ip_in(&ns.name, &["link", "set", interface, "up"]);
        }
        VethPair { a, b, a_if, b_if }
    }
}

/// Runs `f` on a thread that has entered network namespace `ns` (sockets it creates and
/// interface names it resolves belong to `ns`).
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file =
            std::fs::File::open(&path).unwrap_or_else(|error| panic!("opening {path}: {error}"));
        // SAFETY: a valid namespace fd; setns only affects this thread.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
