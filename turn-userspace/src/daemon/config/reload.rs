//! A reload (SIGHUP, `turn-relay ctl reload`): the sources are read again; keys that a
//! running relay can change take their new values, the others keep their old ones and are
//! named so the operator knows a restart is due. A configuration with an error changes
//! nothing (the caller keeps the old one and logs the error).

use crate::protocol::auth::StaticSecret;

use super::keys::{Reload, KEYS};
use super::{Config, ConfigError, Sources};

/// The outcome of a reload that read a valid configuration.
#[derive(Debug)]
pub struct Reloaded {
    /// The configuration in force now: the new values of the live keys, the old values of
    /// the keys that need a restart.
    pub config: Config,
    /// Live keys whose value changed (secrets included, never shown).
    pub changed: Vec<String>,
    /// Keys whose new value needs a restart; they keep their old value until then.
    pub restart_needed: Vec<String>,
}

impl Config {
    /// Reads `sources` again and merges them into this running configuration.
    pub fn reload(&self, sources: &Sources) -> Result<Reloaded, ConfigError> {
        Config::from_sources(sources).map(|new| self.merge_reloaded(new))
    }

    /// `new`'s live values over this configuration's restart-only ones.
    pub(super) fn merge_reloaded(&self, mut new: Config) -> Reloaded {
        // Values drawn at random at load time stay those of the running process: a fresh
        // random nonce secret would turn every nonce stale, a fresh demo password would
        // lock the demo user out.
        if !self.nonce_secret_configured && !new.nonce_secret_configured {
            new.nonce_secret.clone_from(&self.nonce_secret);
        }
        if self.demo_credentials.is_some() && new.demo_credentials.is_some() {
            new.users.clone_from(&self.users);
            new.demo_credentials.clone_from(&self.demo_credentials);
        }
        let old_values = self.printed_values();
        let new_values = new.printed_values();
        let mut changed = Vec::new();
        let mut restart_needed = Vec::new();
        for key in KEYS {
            let name = key.dotted();
            let differs =
                old_values.get(&name) != new_values.get(&name) || !same_secrets(self, &new, &name);
            if !differs {
                continue;
            }
            match key.reload {
                Reload::Live => changed.push(name),
                Reload::Restart => restart_needed.push(name),
            }
        }
        let mut applied = self.clone();
        applied.alternate_servers = new.alternate_servers;
        applied.drain_exit = new.drain_exit;
        applied.drain_timeout = new.drain_timeout;
        applied.users = new.users;
        applied.auth_secrets = new.auth_secrets;
        applied.zrest_secrets = new.zrest_secrets;
        applied.nonce_lifetime = new.nonce_lifetime;
        applied.nonce_secret = new.nonce_secret;
        applied.nonce_secret_configured = new.nonce_secret_configured;
        applied.advertise_password_algorithms = new.advertise_password_algorithms;
        applied.peers_allow = new.peers_allow;
        applied.peers_deny = new.peers_deny;
        applied.admin_token = new.admin_token;
        applied.admin_token_file = new.admin_token_file;
        applied.log_level = new.log_level;
        applied.demo_credentials = new.demo_credentials;
        for key in KEYS.iter().filter(|key| key.reload == Reload::Live) {
            let name = key.dotted();
            match new.origins.get(&name) {
                Some(origin) => applied.origins.insert(name, origin.clone()),
                None => applied.origins.remove(&name),
            };
        }
        Reloaded {
            config: applied,
            changed,
            restart_needed,
        }
    }
}

/// Whether the secret values of `key` (redacted when printed) are the same in both.
fn same_secrets(old: &Config, new: &Config, key: &str) -> bool {
    match key {
        "auth.users" => {
            old.users.len() == new.users.len()
                && old.users.iter().zip(&new.users).all(|(a, b)| {
                    a.name == b.name
                        && match (&a.secret, &b.secret) {
                            (StaticSecret::Password(a), StaticSecret::Password(b)) => a == b,
                            (StaticSecret::Md5Key(a), StaticSecret::Md5Key(b)) => a == b,
                            _ => false,
                        }
                })
        }
        "auth.auth_secrets" => old.auth_secrets == new.auth_secrets,
        "auth.zrest_secrets" => old.zrest_secrets == new.zrest_secrets,
        "auth.nonce_secret" => old.nonce_secret == new.nonce_secret,
        "admin.token" => old.admin_token == new.admin_token,
        _ => true,
    }
}
