//! The file as written: one struct per `[table]`, unknown keys refused. Every value that
//! is checked after parsing keeps its position ([`Spanned`]) so errors can name its line.
//! The same structs print the effective configuration (`print`), so the two cannot list
//! different keys.

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::streams::{RawConnections, RawProxyProtocol, RawTcp, RawTls};

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) auth: RawAuth,
    #[serde(default)]
    pub(super) peers: RawPeers,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) xdp: RawXdp,
    #[serde(default)]
    pub(super) metrics: RawMetrics,
    #[serde(default)]
    pub(super) admin: RawAdmin,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) tcp: RawTcp,
    #[serde(default)]
    pub(super) tls: RawTls,
    #[serde(default)]
    pub(super) connections: RawConnections,
    #[serde(default)]
    pub(super) proxy_protocol: RawProxyProtocol,
}

impl RawConfig {
    /// Parses `text`; a type error knows the path of the key it happened at.
    pub(super) fn from_toml(
        text: &str,
    ) -> Result<RawConfig, serde_path_to_error::Error<toml::de::Error>> {
        serde_path_to_error::deserialize(toml::Deserializer::new(text))
    }

    /// Replaces every value with the one `layer` sets (a higher-precedence source).
    pub(super) fn overlay(&mut self, layer: RawConfig) {
        self.server.overlay(layer.server);
        self.auth.overlay(layer.auth);
        self.peers.overlay(layer.peers);
        self.limits.overlay(layer.limits);
        self.xdp.overlay(layer.xdp);
        self.metrics.overlay(layer.metrics);
        self.admin.overlay(layer.admin);
        self.log.overlay(layer.log);
        self.tcp.overlay(layer.tcp);
        self.tls.overlay(layer.tls);
        self.connections.overlay(layer.connections);
        self.proxy_protocol.overlay(layer.proxy_protocol);
    }
}

/// `overlay` for a table whose keys are all optional: the layer's present keys win.
macro_rules! overlay {
    ($table:ident { $($key:ident),* $(,)? }) => {
        impl $table {
            fn overlay(&mut self, layer: $table) {
                $(if layer.$key.is_some() {
                    self.$key = layer.$key;
                })*
            }
        }
    };
}

overlay!(RawServer {
    realm,
    software,
    listen,
    relay_address,
    relay_address_v6,
    public_address,
    public_address_v6,
    port_range,
    default_lifetime,
    max_lifetime,
    max_allocations,
    max_allocations_per_user,
    threads,
    coalesce_us,
    permission_lifetime,
    channel_lifetime,
    alternate_servers,
    drain_exit,
    drain_timeout,
});
overlay!(RawAuth {
    users,
    auth_secrets,
    zrest_secrets,
    nonce_lifetime,
    nonce_secret,
    advertise_password_algorithms,
});
overlay!(RawPeers { allow, deny });
overlay!(RawLimits {
    max_permissions_per_allocation,
    max_channels_per_allocation,
    max_peers_per_request,
    credential_expiry_grace,
    unauthenticated_answers_per_second,
    unauthenticated_answers_burst,
    max_cached_responses_per_user,
    max_bytes_per_second_per_allocation,
    max_bytes_per_second_total,
});
overlay!(RawXdp {
    mode,
    interfaces,
    trace
});
overlay!(RawMetrics { listen });
overlay!(RawAdmin { token, token_file });
overlay!(RawLog { level, format });
overlay!(RawTcp {
    enabled,
    listen,
    proxy_protocol
});
overlay!(RawTls {
    listen,
    cert,
    key,
    proxy_protocol
});
overlay!(RawConnections {
    handshake_timeout,
    idle_timeout,
    max,
    max_per_ip,
    max_message_size,
    write_buffer,
});
overlay!(RawProxyProtocol { allow_from });

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) realm: Option<Spanned<String>>,
    pub(super) software: Option<Spanned<String>>,
    pub(super) listen: Option<Vec<Spanned<String>>>,
    pub(super) relay_address: Option<Spanned<String>>,
    pub(super) relay_address_v6: Option<Spanned<String>>,
    pub(super) public_address: Option<Spanned<String>>,
    pub(super) public_address_v6: Option<Spanned<String>>,
    pub(super) port_range: Option<Spanned<String>>,
    pub(super) default_lifetime: Option<Spanned<u64>>,
    pub(super) max_lifetime: Option<Spanned<u64>>,
    pub(super) max_allocations: Option<Spanned<u64>>,
    pub(super) max_allocations_per_user: Option<Spanned<u64>>,
    pub(super) threads: Option<Spanned<u64>>,
    pub(super) coalesce_us: Option<Spanned<u64>>,
    pub(super) permission_lifetime: Option<Spanned<u64>>,
    pub(super) channel_lifetime: Option<Spanned<u64>>,
    pub(super) alternate_servers: Option<Vec<Spanned<String>>>,
    pub(super) drain_exit: Option<bool>,
    pub(super) drain_timeout: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub(super) users: Option<Vec<Spanned<RawUser>>>,
    pub(super) auth_secrets: Option<Vec<Spanned<String>>>,
    pub(super) zrest_secrets: Option<Vec<Spanned<String>>>,
    pub(super) nonce_lifetime: Option<Spanned<u64>>,
    pub(super) nonce_secret: Option<Spanned<String>>,
    pub(super) advertise_password_algorithms: Option<bool>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUser {
    pub(super) name: String,
    pub(super) password: Option<String>,
    pub(super) key: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeers {
    pub(super) allow: Option<Vec<Spanned<String>>>,
    pub(super) deny: Option<Vec<Spanned<String>>>,
}

/// `[limits]`: what one allocation, request or source may cost the relay.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_permissions_per_allocation: Option<Spanned<u64>>,
    pub(super) max_channels_per_allocation: Option<Spanned<u64>>,
    pub(super) max_peers_per_request: Option<Spanned<u64>>,
    pub(super) credential_expiry_grace: Option<Spanned<u64>>,
    pub(super) unauthenticated_answers_per_second: Option<Spanned<u64>>,
    pub(super) unauthenticated_answers_burst: Option<Spanned<u64>>,
    pub(super) max_cached_responses_per_user: Option<Spanned<u64>>,
    pub(super) max_bytes_per_second_per_allocation: Option<Spanned<u64>>,
    pub(super) max_bytes_per_second_total: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawXdp {
    pub(super) mode: Option<Spanned<String>>,
    pub(super) interfaces: Option<Vec<Spanned<String>>>,
    pub(super) trace: Option<bool>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) listen: Option<Spanned<String>>,
}

/// The admin endpoint's control: the bearer token that allows state-changing requests
/// from other hosts than loopback (its listen address stays `metrics.listen`).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) token: Option<Spanned<String>>,
    pub(super) token_file: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) level: Option<Spanned<String>>,
    pub(super) format: Option<Spanned<String>>,
}
