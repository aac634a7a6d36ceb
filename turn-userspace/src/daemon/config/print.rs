//! `--print-config`: the effective configuration as TOML, in the schema's own structs, with
//! every secret replaced by `"<redacted>"`. Only a pre-hashed key (`auth.users` `key`) makes
//! the output unfit to load again: its placeholder is not 32 hex digits.

use toml::Spanned;

use crate::protocol::auth::StaticSecret;

use super::schema::{RawAuth, RawConfig, RawLog, RawMetrics, RawPeers, RawServer, RawUser, RawXdp};
use super::Config;

const REDACTED: &str = "<redacted>";

/// A [`Spanned`] value for printing (the position matters only when parsing).
fn spanless<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}

fn text(value: impl ToString) -> Spanned<String> {
    spanless(value.to_string())
}

fn redacted(list: &[String]) -> Vec<Spanned<String>> {
    list.iter().map(|_| text(REDACTED)).collect()
}

/// Numbers in the configuration are far below `u64::MAX`.
fn number(value: usize) -> Spanned<u64> {
    spanless(u64::try_from(value).unwrap_or(u64::MAX))
}

impl Config {
    /// The effective configuration as TOML, secrets replaced by `"<redacted>"`.
    pub fn to_toml(&self) -> String {
        let streams = self.streams.printed(&self.listen);
        let printed = RawConfig {
            server: RawServer {
                realm: Some(text(&self.realm)),
                software: Some(text(self.software.as_deref().unwrap_or_default())),
                listen: Some(self.listen.iter().map(text).collect()),
                relay_address: self.relay_v4.map(|r| text(r.bind)),
                public_address: self.relay_v4.map(|r| text(r.advertised)),
                relay_address_v6: self.relay_v6.map(|r| text(r.bind)),
                public_address_v6: self.relay_v6.map(|r| text(r.advertised)),
                port_range: Some(text(format!(
                    "{}-{}",
                    self.port_range.start(),
                    self.port_range.end()
                ))),
                default_lifetime: Some(spanless(self.default_lifetime.as_secs())),
                max_lifetime: Some(spanless(self.max_lifetime.as_secs())),
                max_allocations: Some(number(self.max_allocations)),
                max_allocations_per_user: Some(number(self.max_allocations_per_user)),
                threads: Some(number(self.threads)),
                permission_lifetime: Some(spanless(self.permission_lifetime.as_secs())),
                channel_lifetime: Some(spanless(self.channel_lifetime.as_secs())),
            },
            auth: RawAuth {
                users: self
                    .users
                    .iter()
                    .map(|user| {
                        let (password, key) = match user.secret {
                            StaticSecret::Password(_) => (Some(REDACTED.to_owned()), None),
                            StaticSecret::Md5Key(_) => (None, Some(REDACTED.to_owned())),
                        };
                        spanless(RawUser {
                            name: user.name.clone(),
                            password,
                            key,
                        })
                    })
                    .collect(),
                auth_secrets: redacted(&self.auth_secrets),
                zrest_secrets: redacted(&self.zrest_secrets),
                nonce_lifetime: Some(spanless(self.nonce_lifetime.as_secs())),
                nonce_secret: self.nonce_secret_configured.then(|| text(REDACTED)),
                advertise_password_algorithms: Some(self.advertise_password_algorithms),
            },
            peers: RawPeers {
                allow: self.peers_allow.iter().map(text).collect(),
                deny: self.peers_deny.iter().map(text).collect(),
            },
            xdp: RawXdp {
                mode: Some(text(self.xdp_mode)),
                interfaces: self.xdp_interfaces.iter().map(text).collect(),
            },
            metrics: RawMetrics {
                listen: Some(text(
                    self.metrics_listen
                        .map(|address| address.to_string())
                        .unwrap_or_default(),
                )),
            },
            log: RawLog {
                level: Some(text(&self.log_level)),
                format: Some(text(self.log_format)),
            },
            tcp: streams.tcp,
            tls: streams.tls,
            connections: streams.connections,
            proxy_protocol: streams.proxy_protocol,
        };
        let body = toml::to_string_pretty(&printed)
            .unwrap_or_else(|error| format!("# cannot print: {error}\n"));
        format!(
            "# Effective configuration (from {}); secrets are redacted.\n{body}",
            self.source
        )
    }
}
