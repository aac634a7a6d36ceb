//! A token bucket per source for the answers the server gives without authentication
//! (401 challenges, 400 and other errors to unauthenticated requests): a spoofed source
//! gets at most `burst` answers at once and `per_second` after that, so the relay cannot
//! be used to reflect traffic at a victim. Time is injected; the tables are bounded.
//!
//! A source that sent back a nonce issued to its address has shown that it receives the
//! relay's answers: it is no spoofed victim, and for [`VERIFIED_FOR`] its answers are not
//! limited (a NAT shared by many clients, a load test). Nonces are bound to the client's
//! address, so a spoofer cannot verify someone else's.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

/// Sources with a bucket of their own; beyond that, new sources share one bucket.
const MAX_SOURCES: usize = 65_536;
/// Tokens are counted in thousandths, so a rate refills in integer steps.
const MILLI: u64 = 1000;
/// How long a source stays verified after it last sent back one of our nonces.
const VERIFIED_FOR: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    milli_tokens: u64,
    updated: Instant,
}

impl Bucket {
    fn full(burst: u32, now: Instant) -> Bucket {
        Bucket {
            milli_tokens: u64::from(burst) * MILLI,
            updated: now,
        }
    }

    /// Refills for the time since the last update; whether it is full.
    fn refill(&mut self, per_second: u32, burst: u32, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated);
        let added = elapsed.as_nanos() * u128::from(per_second) * u128::from(MILLI) / 1_000_000_000;
        let cap = u64::from(burst) * MILLI;
        self.milli_tokens = u64::try_from(u128::from(self.milli_tokens) + added)
            .unwrap_or(u64::MAX)
            .min(cap);
        self.updated = now;
        self.milli_tokens >= cap
    }

    fn take(&mut self) -> bool {
        if self.milli_tokens >= MILLI {
            self.milli_tokens -= MILLI;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
pub(super) struct AnswerLimiter {
    per_second: u32,
    burst: u32,
    buckets: HashMap<IpAddr, Bucket>,
    /// Shared by new sources while the table is full of active ones.
    overflow: Option<Bucket>,
    last_sweep: Option<Instant>,
    /// Sources that sent back a nonce issued to them, and when they last did.
    verified: HashMap<IpAddr, Instant>,
    last_verified_sweep: Option<Instant>,
}

impl AnswerLimiter {
    /// `per_second` 0 turns the limit off.
    pub(super) fn new(per_second: u32, burst: u32) -> Self {
        AnswerLimiter {
            per_second,
            burst: burst.max(1),
            buckets: HashMap::new(),
            overflow: None,
            last_sweep: None,
            verified: HashMap::new(),
            last_verified_sweep: None,
        }
    }

    /// `source` sent back a nonce issued to its address.
    pub(super) fn verify(&mut self, source: IpAddr, now: Instant) {
        if self.per_second == 0 {
            return;
        }
        let key = source_key(source);
        if !self.verified.contains_key(&key) && self.verified.len() >= MAX_SOURCES {
            if once_a_second(&mut self.last_verified_sweep, now) {
                self.verified
                    .retain(|_, at| now.saturating_duration_since(*at) < VERIFIED_FOR);
            }
            if self.verified.len() >= MAX_SOURCES {
                return;
            }
        }
        self.verified.insert(key, now);
    }

    /// Whether `source` may get one more answer now (and counts it).
    pub(super) fn allow(&mut self, source: IpAddr, now: Instant) -> bool {
        if self.per_second == 0 {
            return true;
        }
        let (per_second, burst) = (self.per_second, self.burst);
        let key = source_key(source);
        if self
            .verified
            .get(&key)
            .is_some_and(|at| now.saturating_duration_since(*at) < VERIFIED_FOR)
        {
            return true;
        }
        if !self.buckets.contains_key(&key) && self.buckets.len() >= MAX_SOURCES {
            self.sweep(now);
        }
        let bucket = if self.buckets.len() < MAX_SOURCES || self.buckets.contains_key(&key) {
            self.buckets
                .entry(key)
                .or_insert_with(|| Bucket::full(burst, now))
        } else {
            self.overflow
                .get_or_insert_with(|| Bucket::full(burst, now))
        };
        bucket.refill(per_second, burst, now);
        bucket.take()
    }

    /// Forgets the sources whose bucket has refilled (a new bucket starts full, so this
    /// changes no answer); at most once a second, so a flood of new sources costs O(1)
    /// per answer on average.
    fn sweep(&mut self, now: Instant) {
        if !once_a_second(&mut self.last_sweep, now) {
            return;
        }
        let (per_second, burst) = (self.per_second, self.burst);
        self.buckets
            .retain(|_, bucket| !bucket.refill(per_second, burst, now));
    }

    #[cfg(test)]
    pub(super) fn sources(&self) -> usize {
        self.buckets.len()
    }
}

/// Whether a second passed since `last` (then `last` becomes `now`).
fn once_a_second(last: &mut Option<Instant>, now: Instant) -> bool {
    if last.is_some_and(|last| now.saturating_duration_since(last) < Duration::from_secs(1)) {
        return false;
    }
    *last = Some(now);
    true
}

/// IPv4 sources are limited per address; IPv6 sources per /64, the smallest block an
/// end site gets, so one host cannot dodge the limit by rotating its interface ID.
pub fn source_key(source: IpAddr) -> IpAddr {
    match source {
        IpAddr::V4(_) => source,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn burst_then_rate_per_source() {
        let start = Instant::now();
        let mut limiter = AnswerLimiter::new(10, 5);
        let source = ip("198.18.0.1");
        let allowed = (0..20).filter(|_| limiter.allow(source, start)).count();
        assert_eq!(allowed, 5, "the burst");
        assert!(limiter.allow(ip("198.18.0.2"), start), "another source");
        // 10 per second: one token every 100 ms.
        assert!(!limiter.allow(source, start + Duration::from_millis(99)));
        assert!(limiter.allow(source, start + Duration::from_millis(100)));
        let later = start + Duration::from_secs(60);
        let allowed = (0..20).filter(|_| limiter.allow(source, later)).count();
        assert_eq!(allowed, 5, "refilled to the burst, not beyond");
        // One IPv6 /64 is one source.
        let a = ip("2001:db8:1:2::1");
        let b = ip("2001:db8:1:2:ffff::9");
        let allowed = (0..10)
            .filter(|index| limiter.allow(if index % 2 == 0 { a } else { b }, start))
            .count();
        assert_eq!(allowed, 5);
        // A source that sent back our nonce is not limited (for a while).
        limiter.verify(source, later);
        assert!((0..100).all(|_| limiter.allow(source, later)));
        let expired = later + VERIFIED_FOR;
        let allowed = (0..20).filter(|_| limiter.allow(source, expired)).count();
        assert_eq!(allowed, 5);
        // Off.
        let mut off = AnswerLimiter::new(0, 1);
        assert!((0..1000).all(|_| off.allow(source, start)));
    }

    #[test]
    fn the_table_is_bounded() {
        let start = Instant::now();
        let mut limiter = AnswerLimiter::new(1, 2);
        for index in 0..(MAX_SOURCES as u32 + 10) {
            limiter.allow(
                IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + index)),
                start,
            );
        }
        assert_eq!(limiter.sources(), MAX_SOURCES);
        // The sources beyond share one bucket.
        let newcomers = (0..10u32)
            .filter(|index| {
                limiter.allow(
                    IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + index)),
                    start,
                )
            })
            .count();
        assert!(newcomers <= 2, "{newcomers}");
        // Once the old buckets have refilled, a sweep makes room again.
        let later = start + Duration::from_secs(10);
        assert!(limiter.allow(ip("198.18.0.9"), later));
        assert_eq!(limiter.sources(), 1);
    }
}
