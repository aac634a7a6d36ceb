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
