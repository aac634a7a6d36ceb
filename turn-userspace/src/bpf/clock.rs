//! Entry expiries for the XDP program: `bpf_ktime_get_ns` is CLOCK_MONOTONIC, and so is
//! `std::time::Instant` on Linux, so an `Instant` converts by its distance from now.

use std::time::Instant;

/// CLOCK_MONOTONIC nanoseconds at `at`.
pub(crate) fn monotonic_ns(at: Instant) -> u64 {
    let now = Instant::now();
    let now_ns = clock_monotonic_ns();
    if at >= now {
        now_ns.saturating_add(duration_ns(at - now))
    } else {
        now_ns.saturating_sub(duration_ns(now - at))
    }
}

fn duration_ns(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn clock_monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn instants_map_to_the_monotonic_clock() {
        let before = clock_monotonic_ns();
        let now = monotonic_ns(Instant::now());
        let after = clock_monotonic_ns();
        assert!(before <= now && now <= after, "{before} {now} {after}");
        let later = monotonic_ns(Instant::now() + Duration::from_secs(600));
        let expected = clock_monotonic_ns() + 600_000_000_000;
        assert!(
            later.abs_diff(expected) < 50_000_000,
            "{later} vs {expected}"
        );
    }
}
