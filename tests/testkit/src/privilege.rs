//! Whether a privileged test may run, and names no concurrent test uses.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Whether a privileged test (network namespaces, XDP, BPF_PROG_TEST_RUN) may run.
/// Without root it is skipped (returns false), unless `CI=true`, where a skip would hide
/// a failure, so it panics instead.
pub fn privileged(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|value| value == "true") {
        panic!("{test} needs root (network namespaces, XDP); CI=true forbids skipping it");
    }
    eprintln!("skipping {test}: needs root (network namespaces, XDP)");
    false
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The prefix of every name [`unique_name`] hands out.
pub(crate) const NAME_PREFIX: &str = "tr-";

/// A name no other test (in this or a concurrently running process) uses:
/// `tr-<pid>-<n>-<role>`.
pub fn unique_name(role: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{NAME_PREFIX}{}-{}-{role}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ_and_carry_the_pid() {
        let (first, second) = (unique_name("relay"), unique_name("relay"));
        assert_ne!(first, second);
        assert!(first.starts_with(&format!("tr-{}-", std::process::id())));
        assert!(first.ends_with("-relay"));
    }
}
