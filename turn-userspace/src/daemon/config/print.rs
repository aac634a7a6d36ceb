//! `--print-config`: the effective configuration as TOML, in the schema's own structs, with
//! every secret replaced by `"<redacted>"` and, after each value, where it came from (a
//! file line, an environment variable, a command-line option, or the default). Only a
//! pre-hashed key (`auth.users` `key`) makes the output unfit to load again: its
//! placeholder is not 32 hex digits.

use std::collections::BTreeMap;

use toml::Spanned;
use toml_edit::{DocumentMut, Item};

use crate::protocol::auth::StaticSecret;

use super::keys::KEYS;
use super::schema::{
    RawAdmin, RawAuth, RawConfig, RawLimits, RawLog, RawMetrics, RawPeers, RawServer, RawUser,
    RawXdp,
};
use super::Config;

const REDACTED: &str = "<redacted>";

/// A [`Spanned`] value for printing (the position matters only when parsing).
fn spanless<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}

fn text(value: impl ToString) -> Spanned<String> {
    spanless(value.to_string())
}

fn redacted(list: &[String]) -> Option<Vec<Spanned<String>>> {
    Some(list.iter().map(|_| text(REDACTED)).collect())
}

fn texts<T: std::fmt::Display>(list: &[T]) -> Option<Vec<Spanned<String>>> {
    Some(list.iter().map(text).collect())
}

/// Numbers in the configuration are far below `u64::MAX`.
fn number(value: usize) -> Spanned<u64> {
    spanless(u64::try_from(value).unwrap_or(u64::MAX))
}

impl Config {
    /// The effective configuration as TOML, secrets replaced by `"<redacted>"`, each value
    /// followed by a comment saying where it came from.
    pub fn to_toml(&self) -> String {
        let body = match toml::to_string_pretty(&self.printed()) {
            Ok(body) => body,
            Err(error) => return format!("# cannot print: {error}\n"),
        };
        let body = match body.parse::<DocumentMut>() {
            Ok(mut document) => {
                self.annotate_origins(&mut document);
                document.to_string()
            }
            Err(_) => body,
        };
        format!(
            "# Effective configuration (from {}); secrets are redacted.\n\
             # Precedence: file < environment (TURN_RELAY_<SECTION>_<KEY>) < command line.\n{body}",
            self.source
        )
    }

    /// Every printed value by dotted key (secrets redacted).
    pub(super) fn printed_values(&self) -> BTreeMap<String, toml::Value> {
        let table = toml::Table::try_from(self.printed()).unwrap_or_default();
        let mut values = BTreeMap::new();
        for (section, keys) in table {
            if let toml::Value::Table(keys) = keys {
                for (key, value) in keys {
                    values.insert(format!("{section}.{key}"), value);
                }
            }
        }
        values
    }

    /// Adds `# <origin>` after every value.
    fn annotate_origins(&self, document: &mut DocumentMut) {
        for key in KEYS {
            let origin = self
                .origins
                .get(&key.dotted())
                .map_or_else(|| "default".to_owned(), ToString::to_string);
            let Some(item) = document
                .get_mut(key.section)
                .and_then(|section| section.get_mut(key.name))
            else {
                continue;
            };
            match item {
                Item::Value(value) => {
                    value.decor_mut().set_suffix(format!(" # {origin}"));
                }
                Item::ArrayOfTables(tables) => {
                    for table in tables.iter_mut() {
                        table
                            .decor_mut()
                            .set_prefix(format!("\n# {}: {origin}\n", key.dotted()));
                    }
                }
                _ => {}
            }
        }
    }

    /// The schema's structs filled with the effective values.
    fn printed(&self) -> RawConfig {
        let streams = self.streams.printed(&self.listen);
        RawConfig {
            server: RawServer {
                realm: Some(text(&self.realm)),
                software: Some(text(self.software.as_deref().unwrap_or_default())),
                listen: texts(&self.listen),
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
                coalesce_us: Some(spanless(
                    u64::try_from(self.coalesce.as_micros()).unwrap_or(u64::MAX),
                )),
                permission_lifetime: Some(spanless(self.permission_lifetime.as_secs())),
                channel_lifetime: Some(spanless(self.channel_lifetime.as_secs())),
                alternate_servers: texts(&self.alternate_servers),
                drain_exit: Some(self.drain_exit),
                drain_timeout: Some(spanless(self.drain_timeout.as_secs())),
            },
            auth: RawAuth {
                users: Some(
                    self.users
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
                ),
                auth_secrets: redacted(&self.auth_secrets),
                zrest_secrets: redacted(&self.zrest_secrets),
                nonce_lifetime: Some(spanless(self.nonce_lifetime.as_secs())),
                nonce_secret: self.nonce_secret_configured.then(|| text(REDACTED)),
                advertise_password_algorithms: Some(self.advertise_password_algorithms),
            },
            peers: RawPeers {
                allow: texts(&self.peers_allow),
                deny: texts(&self.peers_deny),
            },
            limits: RawLimits {
                max_permissions_per_allocation: Some(number(
                    self.limits.max_permissions_per_allocation,
                )),
                max_channels_per_allocation: Some(number(self.limits.max_channels_per_allocation)),
                max_peers_per_request: Some(number(self.limits.max_peers_per_request)),
                credential_expiry_grace: Some(spanless(
                    self.limits.credential_expiry_grace.as_secs(),
                )),
                unauthenticated_answers_per_second: Some(spanless(u64::from(
                    self.limits.unauthenticated_answers_per_second,
                ))),
                unauthenticated_answers_burst: Some(spanless(u64::from(
                    self.limits.unauthenticated_answers_burst,
                ))),
                max_cached_responses_per_user: Some(number(
                    self.limits.max_cached_responses_per_user,
                )),
                max_bytes_per_second_per_allocation: Some(spanless(
                    self.limits.max_bytes_per_second_per_allocation,
                )),
                max_bytes_per_second_total: Some(spanless(self.limits.max_bytes_per_second_total)),
            },
            xdp: RawXdp {
                mode: Some(text(self.xdp_mode)),
                interfaces: texts(&self.xdp_interfaces),
                trace: Some(self.xdp_trace),
            },
            metrics: RawMetrics {
                listen: Some(text(
                    self.metrics_listen
                        .map(|address| address.to_string())
                        .unwrap_or_default(),
                )),
            },
            admin: RawAdmin {
                token: self
                    .admin_token
                    .as_ref()
                    .filter(|_| self.admin_token_file.is_none())
                    .map(|_| text(REDACTED)),
                token_file: self
                    .admin_token_file
                    .as_ref()
                    .map(|path| text(path.display())),
            },
            log: RawLog {
                level: Some(text(&self.log_level)),
                format: Some(text(self.log_format)),
            },
            tcp: streams.tcp,
            tls: streams.tls,
            connections: streams.connections,
            proxy_protocol: streams.proxy_protocol,
        }
    }
}
