//! What the daemon tells the operator at start-up (its effective settings, never secrets)
//! and at shutdown (its totals).

use std::sync::PoisonError;

use crate::bpf::XdpRelay;
use crate::daemon::config::Config;

use super::Hub;

/// The start-up summary of `config`.
pub(super) fn log_startup(config: &Config) {
    tracing::info!(
        "turn-relay {} starting (config: {})",
        env!("CARGO_PKG_VERSION"),
        config.source
    );
    for ignored in &config.ignored_variables {
        tracing::warn!("{ignored}");
    }
    tracing::info!("realm: {}", config.realm);
    for (family, relay) in [("IPv4", config.relay_v4), ("IPv6", config.relay_v6)] {
        if let Some(relay) = relay {
            if relay.advertised == relay.bind {
                tracing::info!("relay address ({family}): {}", relay.bind);
            } else {
                tracing::info!(
                    "relay address ({family}): {} advertised as {}",
                    relay.bind,
                    relay.advertised
                );
            }
        }
    }
    tracing::info!(
        "relay ports: {}-{}; allocations: at most {} ({} per user); lifetime {} s (max {} s)",
        config.port_range.start(),
        config.port_range.end(),
        config.max_allocations,
        if config.max_allocations_per_user == 0 {
            "unlimited".to_owned()
        } else {
            config.max_allocations_per_user.to_string()
        },
        config.default_lifetime.as_secs(),
        config.max_lifetime.as_secs()
    );
    tracing::info!("auth: {}", config.auth_summary());
    if config.users.is_empty() && config.auth_secrets.is_empty() && config.zrest_secrets.is_empty()
    {
        tracing::warn!("no credentials configured: every allocation will be refused");
    }
    if !config.nonce_secret_configured {
        tracing::info!("nonce secret: random for this run (set auth.nonce_secret on relays sharing a load balancer)");
    }
    if let Some((user, password)) = config.demo_credentials() {
        tracing::info!("demo credentials (embedded default, new on every start): user {user:?} password {password:?}");
        if let Some(listen) = config.listen.first() {
            tracing::info!(
                "try it: turnutils_peer -L 127.0.0.2 -p 3480 & turnutils_uclient -u {user} -w {password} -p {} -e 127.0.0.2 -r 3480 -n 10 {}",
                listen.port(),
                listen.ip()
            );
        }
    }
    if !config.peers_allow.is_empty() {
        tracing::info!("peers explicitly allowed: {}", join(&config.peers_allow));
    }
    if !config.peers_deny.is_empty() {
        tracing::info!("peers denied: {}", join(&config.peers_deny));
    }
}

/// The daemon's own memory per allocation holding one permission and one channel: the
/// growth of its resident set (VmRSS) per allocation measured with `turn-bench scale`
/// (release build, XDP attached, 4 000 to 16 000 allocations on 2026-12-01: 0.90 to
/// 0.98 KiB each, see the README's Benchmarks), rounded up with room for its hash
/// tables' doubling. An estimate: allocations with many permissions or channels take
/// more, and the relayed sockets' kernel memory is not counted.
const DAEMON_BYTES_PER_ALLOCATION: u64 = 1280;
/// The daemon's resident set with no allocation, measured the same way (12.1 to 12.3 MiB
/// with XDP attached on 2 CPUs), rounded up.
const DAEMON_BASE_BYTES: u64 = 13 << 20;

/// One line at start-up: the memory the relay needs at `server.max_allocations`, the XDP
/// maps' kernel memory (`map_bytes`, preallocated, known once loaded) plus the daemon's own
/// estimate, so an operator sees it before running out. Warns when the open-file limit or
/// the relayed ports cannot hold that many allocations, and says when the XDP maps hold
/// fewer (the rest are relayed in userspace).
pub(super) fn log_memory_budget(config: &Config, map_bytes: Option<u64>) {
    let max_allocations = config.max_allocations;
    tracing::info!("{}", memory_budget(max_allocations, map_bytes));
    let allocations = u64::try_from(max_allocations).unwrap_or(u64::MAX);
    let fast_path_slots = u64::from(crate::bpf::MAX_FAST_PATH_ALLOCATIONS);
    if map_bytes.is_some() && allocations > fast_path_slots {
        tracing::info!(
            "the XDP maps hold {fast_path_slots} allocations (their kernel memory is \
             bounded); allocations beyond them are relayed in userspace"
        );
    }
    let relayed_ports = relayed_ports(config);
    if allocations > relayed_ports {
        tracing::warn!(
            "max_allocations {max_allocations} is above the {relayed_ports} relayed ports \
             (server.port_range on each relay address): each allocation holds one, so at \
             most {relayed_ports} allocations can exist"
        );
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid resource and a pointer to a live rlimit.
    let reachable = allocations.min(relayed_ports);
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0
        && limit.rlim_cur < reachable
    {
        tracing::warn!(
            "open-file limit {} is below the {reachable} allocations this relay can hold: \
             each allocation holds a relayed socket, so allocations fail once it is \
             reached; raise it (systemd LimitNOFILE=)",
            limit.rlim_cur
        );
    }
}

/// How many relayed transport addresses exist: the port range on each relay address
/// (RFC 8656 §7.2: one per allocation).
fn relayed_ports(config: &Config) -> u64 {
    let per_address = u64::from(*config.port_range.end())
        .saturating_sub(u64::from(*config.port_range.start()))
        + 1;
    let addresses = [config.relay_v4.is_some(), config.relay_v6.is_some()]
        .into_iter()
        .filter(|&present| present)
        .count() as u64;
    per_address * addresses
}

/// The start-up memory line of [`log_memory_budget`].
fn memory_budget(max_allocations: usize, map_bytes: Option<u64>) -> String {
    let mib = |bytes: u64| bytes.div_ceil(1 << 20);
    let daemon = u64::try_from(max_allocations)
        .unwrap_or(u64::MAX)
        .saturating_mul(DAEMON_BYTES_PER_ALLOCATION)
        .saturating_add(DAEMON_BASE_BYTES);
    let maps = map_bytes.unwrap_or(0);
    format!(
        "memory at {max_allocations} allocations: about {} MiB ({} MiB XDP maps in kernel \
         memory{}, + {} MiB daemon estimate: {} MiB base and {DAEMON_BYTES_PER_ALLOCATION} \
         bytes per allocation with one channel)",
        mib(maps.saturating_add(daemon)),
        mib(maps),
        if map_bytes.is_some() {
            ", preallocated"
        } else {
            ": none loaded"
        },
        mib(daemon),
        DAEMON_BASE_BYTES >> 20,
    )
}

/// `items` separated by commas.
pub(super) fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The totals at shutdown: the server's state, what userspace relayed, what the workers
/// received and, while attached, what XDP relayed.
pub(super) fn log_totals(reason: &str, hub: &Hub, xdp: Option<&XdpRelay>) {
    let received: u64 = hub
        .io
        .iter()
        .map(|io| io.lock().unwrap_or_else(PoisonError::into_inner).received)
        .sum();
    let stats = hub.lock().server.stats();
    tracing::info!(
        reason,
        allocations = stats.allocations,
        permissions = stats.permissions,
        channels = stats.channels,
        userspace_to_peer_packets = stats.to_peer_channel_data.packets + stats.to_peer_send.packets,
        userspace_to_client_packets =
            stats.to_client_channel_data.packets + stats.to_client_data_indication.packets,
        received_datagrams = received,
        "shutting down"
    );
    if let Some(xdp) = xdp {
        match xdp.counters() {
            Ok(counters) => {
                let relayed: u64 = counters
                    .iter()
                    .filter(|(outcome, _)| outcome.name().starts_with("relayed_"))
                    .map(|(_, counter)| counter.packets)
                    .sum();
                tracing::info!(
                    xdp_relayed_packets = relayed,
                    xdp_seen_packets = counters.seen().packets,
                    "XDP totals"
                );
            }
            Err(error) => tracing::warn!("reading XDP counters: {error:#}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_budget_adds_the_maps_to_the_daemon_estimate() {
        // The default cap with the maps' measured 95112 KiB.
        let line = memory_budget(16_384, Some(95_112 * 1024));
        assert!(
            line.starts_with("memory at 16384 allocations: about 126 MiB (93 MiB XDP maps"),
            "{line}"
        );
        assert!(
            line.contains("+ 33 MiB daemon estimate: 13 MiB base"),
            "{line}"
        );
        let userspace_only = memory_budget(1, None);
        assert!(userspace_only.contains("0 MiB XDP maps in kernel memory: none loaded"));
    }
}
