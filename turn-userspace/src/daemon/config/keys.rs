//! Every configuration key, with the shape of its value and whether a reload applies it.
//!
//! The schema (`schema.rs`) says how the file is written; this table adds what the other
//! sources and the reload need: the environment variable of each key
//! (`TURN_RELAY_<SECTION>_<KEY>`) and how its text becomes a TOML value, and whether a
//! changed value takes effect on SIGHUP or only after a restart. A test checks that the
//! table and the schema list the same keys.

/// How a value written as text (an environment variable, a command-line option) becomes
/// the TOML value the file would hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A string, taken as written.
    Text,
    /// A whole number.
    Number,
    /// `true` or `false`.
    Flag,
    /// Comma-separated strings (an empty value is an empty list).
    TextList,
    /// Comma-separated `name:password` or `name:0x<32 hex digits of the MD5 key>`, as
    /// coturn's `user=` option writes them.
    Users,
}

/// When a changed value takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reload {
    /// On SIGHUP / `turn-relay ctl reload`, without touching live allocations.
    Live,
    /// Only after a restart: a reload names it in a warning and keeps the old value.
    Restart,
}

/// One configuration key.
#[derive(Debug, Clone, Copy)]
pub(super) struct Key {
    pub(super) section: &'static str,
    pub(super) name: &'static str,
    pub(super) kind: Kind,
    pub(super) reload: Reload,
}

impl Key {
    /// `section.name`, as errors and `--print-config` name it.
    pub(super) fn dotted(&self) -> String {
        format!("{}.{}", self.section, self.name)
    }

    /// The environment variable that overrides it: `TURN_RELAY_SERVER_REALM`.
    pub(super) fn environment_variable(&self) -> String {
        format!("{ENV_PREFIX}{}_{}", self.section, self.name).to_uppercase()
    }
}

/// The prefix of every configuration environment variable.
pub const ENV_PREFIX: &str = "TURN_RELAY_";

const fn key(section: &'static str, name: &'static str, kind: Kind, reload: Reload) -> Key {
    Key {
        section,
        name,
        kind,
        reload,
    }
}

use Kind::{Flag, Number, Text, TextList, Users};
use Reload::{Live, Restart};

/// Every key, in the order of `config/turn-relay.toml`.
pub(super) const KEYS: &[Key] = &[
    key("server", "realm", Text, Restart),
    key("server", "software", Text, Restart),
    key("server", "listen", TextList, Restart),
    key("server", "relay_address", Text, Restart),
    key("server", "relay_address_v6", Text, Restart),
    key("server", "public_address", Text, Restart),
    key("server", "public_address_v6", Text, Restart),
    key("server", "port_range", Text, Restart),
    key("server", "default_lifetime", Number, Restart),
    key("server", "max_lifetime", Number, Restart),
    key("server", "max_allocations", Number, Restart),
    key("server", "max_allocations_per_user", Number, Restart),
    key("server", "threads", Number, Restart),
    key("server", "coalesce_us", Number, Restart),
    key("server", "permission_lifetime", Number, Restart),
    key("server", "channel_lifetime", Number, Restart),
    key("server", "alternate_servers", TextList, Live),
    key("server", "drain_exit", Flag, Live),
    key("server", "drain_timeout", Number, Live),
    key("auth", "users", Users, Live),
    key("auth", "auth_secrets", TextList, Live),
    key("auth", "zrest_secrets", TextList, Live),
    key("auth", "nonce_lifetime", Number, Live),
    key("auth", "nonce_secret", Text, Live),
    key("auth", "advertise_password_algorithms", Flag, Live),
    key("peers", "allow", TextList, Live),
    key("peers", "deny", TextList, Live),
    key("limits", "max_permissions_per_allocation", Number, Restart),
    key("limits", "max_channels_per_allocation", Number, Restart),
    key("limits", "max_peers_per_request", Number, Restart),
    key("limits", "credential_expiry_grace", Number, Restart),
    key(
        "limits",
        "unauthenticated_answers_per_second",
        Number,
        Restart,
    ),
    key("limits", "unauthenticated_answers_burst", Number, Restart),
    key("limits", "max_cached_responses_per_user", Number, Restart),
    key(
        "limits",
        "max_bytes_per_second_per_allocation",
        Number,
        Restart,
    ),
    key("limits", "max_bytes_per_second_total", Number, Restart),
    key("xdp", "mode", Text, Restart),
    key("xdp", "interfaces", TextList, Restart),
    key("xdp", "trace", Flag, Restart),
    key("metrics", "listen", Text, Restart),
    key("tcp", "enabled", Flag, Restart),
    key("tcp", "listen", TextList, Restart),
    key("tcp", "proxy_protocol", Flag, Restart),
    // The paths need a restart; the files are read again on every reload.
    key("tls", "cert", Text, Restart),
    key("tls", "key", Text, Restart),
    key("tls", "listen", TextList, Restart),
    key("tls", "proxy_protocol", Flag, Restart),
    key("connections", "handshake_timeout", Number, Restart),
    key("connections", "idle_timeout", Number, Restart),
    key("connections", "max", Number, Restart),
    key("connections", "max_per_ip", Number, Restart),
    key("connections", "max_message_size", Number, Restart),
    key("connections", "write_buffer", Number, Restart),
    key("proxy_protocol", "allow_from", TextList, Restart),
    key("admin", "token", Text, Live),
    key("admin", "token_file", Text, Live),
    key("log", "level", Text, Live),
    key("log", "format", Text, Restart),
];

/// The key named `section.name`.
pub(super) fn find(dotted: &str) -> Option<&'static Key> {
    KEYS.iter().find(|key| {
        dotted
            .split_once('.')
            .is_some_and(|(section, name)| key.section == section && key.name == name)
    })
}

/// The key overridden by environment variable `variable`.
pub(super) fn by_environment_variable(variable: &str) -> Option<&'static Key> {
    KEYS.iter()
        .find(|key| key.environment_variable() == variable)
}

/// `text` (an environment variable's or an option's value) as the TOML value of a key of
/// `kind`, or a message saying what was expected.
pub(super) fn value_of_text(kind: Kind, text: &str) -> Result<toml::Value, String> {
    let list = || {
        text.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
    };
    match kind {
        Text => Ok(toml::Value::String(text.to_owned())),
        Number => text
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("{text:?} is not a whole number")),
        Flag => match text.trim() {
            "true" | "1" | "yes" => Ok(toml::Value::Boolean(true)),
            "false" | "0" | "no" => Ok(toml::Value::Boolean(false)),
            other => Err(format!("{other:?} is not true or false")),
        },
        TextList => Ok(toml::Value::Array(
            list()
                .map(|item| toml::Value::String(item.to_owned()))
                .collect(),
        )),
        Users => list()
            .map(|entry| {
                let (name, secret) = entry
                    .split_once(':')
                    .ok_or_else(|| format!("{entry:?} is not name:password or name:0x<md5 key>"))?;
                let mut user = toml::Table::new();
                user.insert("name".into(), toml::Value::String(name.to_owned()));
                // coturn's convention: a 0x-prefixed 32-hex-digit secret is the MD5 key.
                let is_key = secret
                    .strip_prefix("0x")
                    .is_some_and(|digits| digits.len() == 32 && hex::decode(digits).is_ok());
                let field = if is_key { "key" } else { "password" };
                user.insert(field.into(), toml::Value::String(secret.to_owned()));
                Ok(toml::Value::Table(user))
            })
            .collect::<Result<Vec<_>, String>>()
            .map(toml::Value::Array),
    }
}
