//! `turn-relay import-config --from coturn|restund FILE`: an equivalent turn-relay TOML on
//! stdout, for operators moving from coturn (`/etc/turnserver.conf`) or Wire's restund
//! (`/etc/restund/restund.conf`).
//!
//! Each option of the source lands in the key that does the same, or in a comment at the
//! end saying why it has no equivalent (never with its value when that may be a secret).
//! The output is checked like `--check-config` before it is printed as valid.

mod coturn;
mod restund;

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use super::Config;
use crate::daemon::interfaces;

/// The configuration formats that can be imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// coturn's turnserver.conf (`option=value` or `option value`, one per line).
    Coturn,
    /// restund's restund.conf (`key value`, one per line).
    Restund,
}

/// The `import-config` command line.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The format of FILE.
    #[arg(long, value_enum)]
    from: Format,
    /// The configuration file to convert.
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

/// Runs `import-config`: 0 when the printed TOML is valid, 1 when it needs editing (the
/// error says what), 2 when FILE cannot be read.
pub fn main(args: &ImportArgs) -> ExitCode {
    let text = match std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))
    {
        Ok(text) => text,
        Err(error) => {
            eprintln!("{error:#}");
            return ExitCode::from(2);
        }
    };
    let source = args.file.display().to_string();
    let host = HostAddresses::of_this_host();
    let toml = import(args.from, &text, &source, &host);
    print!("{toml}");
    match Config::parse(&toml, "the imported configuration") {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}\nedit the printed configuration before using it");
            ExitCode::FAILURE
        }
    }
}

/// `text` (in `format`, read from `source`) as turn-relay TOML.
pub fn import(format: Format, text: &str, source: &str, host: &HostAddresses) -> String {
    match format {
        Format::Coturn => coturn::import(text, host).render("coturn", source),
        Format::Restund => restund::import(text, host).render("restund", source),
    }
}

/// The addresses of this host: coturn and restund listen and relay on all of them when
/// their file names none, turn-relay needs them written down.
#[derive(Debug, Clone, Default)]
pub struct HostAddresses {
    pub addresses: Vec<IpAddr>,
}

impl HostAddresses {
    /// This host's addresses, less link-local ones (they need a scope to listen on).
    pub fn of_this_host() -> HostAddresses {
        HostAddresses {
            addresses: interfaces::host_addresses().unwrap_or_default(),
        }
    }

    /// The address relays bind to: the first IPv4 (or IPv6) that is not loopback, else
    /// loopback.
    fn relay(&self, ipv4: bool) -> Option<IpAddr> {
        let family = self.addresses.iter().filter(|ip| ip.is_ipv4() == ipv4);
        family
            .clone()
            .find(|ip| !ip.is_loopback())
            .or_else(|| family.clone().next())
            .copied()
    }
}

/// What an importer found: TOML values by section, and the options it could not carry.
#[derive(Debug, Default)]
struct Imported {
    document: toml::Table,
    /// (option as written, why it is not imported).
    skipped: Vec<(String, String)>,
    /// Remarks on what was imported (printed at the top).
    notes: Vec<String>,
}

impl Imported {
    fn set(&mut self, section: &str, key: &str, value: impl Into<toml::Value>) {
        let table = self
            .document
            .entry(section.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(table) = table {
            table.insert(key.to_owned(), value.into());
        }
    }

    fn get(&self, section: &str, key: &str) -> Option<&toml::Value> {
        self.document.get(section)?.get(key)
    }

    /// Appends `value` to the list at `section.key`.
    fn push(&mut self, section: &str, key: &str, value: impl Into<toml::Value>) {
        let mut list = match self.get(section, key) {
            Some(toml::Value::Array(list)) => list.clone(),
            _ => Vec::new(),
        };
        list.push(value.into());
        self.set(section, key, list);
    }

    /// `option` (as written; its value left out when it may be a secret) has no
    /// equivalent, because `why`.
    fn skip(&mut self, option: &str, value: &str, why: &str) {
        let secret = ["password", "secret", "key", "pwd", "token"]
            .iter()
            .any(|word| option.contains(word));
        let shown = if value.is_empty() {
            option.to_owned()
        } else if secret {
            format!("{option} (value not shown)")
        } else {
            format!("{option} {value}")
        };
        self.skipped.push((shown, why.to_owned()));
    }

    fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Fills in the relay and listen addresses from this host when the source gave none,
    /// as coturn and restund then use every address of the host.
    fn default_addresses(&mut self, host: &HostAddresses, tool: &str) {
        let has_relay = self.get("server", "relay_address").is_some()
            || self.get("server", "relay_address_v6").is_some();
        if has_relay {
            return;
        }
        let listen: Vec<IpAddr> = match self.get("server", "listen") {
            Some(toml::Value::Array(list)) => list
                .iter()
                .filter_map(|item| item.as_str()?.parse::<SocketAddr>().ok())
                .map(|address| address.ip())
                .collect(),
            _ => Vec::new(),
        };
        let from_listen = |ipv4: bool| listen.iter().copied().find(|ip| ip.is_ipv4() == ipv4);
        let v4 = from_listen(true).or_else(|| host.relay(true));
        let v6 = from_listen(false).or_else(|| host.relay(false));
        match (v4, v6) {
            (None, None) => self.note(format!(
                "{tool} relays on every address of the host, and none was found here: set \
                 server.relay_address"
            )),
            (v4, v6) => {
                if let Some(v4) = v4 {
                    self.set("server", "relay_address", v4.to_string());
                }
                if let Some(v6) = v6 {
                    self.set("server", "relay_address_v6", v6.to_string());
                }
                self.note(format!(
                    "{tool} relays on the listening addresses or every address of the host; \
                     relay_address{} were taken from {}",
                    if v6.is_some() { "(_v6)" } else { "" },
                    if listen.is_empty() {
                        "this host's addresses"
                    } else {
                        "the listening addresses"
                    }
                ));
            }
        }
        if listen.is_empty() {
            // turn-relay's default: port 3478 on the relay addresses.
            self.note(format!(
                "{tool} listens on every address of the host when none is named; turn-relay \
                 listens on the relay addresses (port 3478) unless server.listen names others"
            ));
        }
    }

    /// The TOML text: a header, the values, then the options left out.
    fn render(&self, tool: &str, source: &str) -> String {
        let mut out = format!(
            "# turn-relay configuration imported from the {tool} configuration {source}\n\
             # by `turn-relay import-config --from {tool}`. Check it with\n\
             #   turn-relay --config <this file> --check-config\n\
             # and see config/turn-relay.toml for every key.\n"
        );
        for note in &self.notes {
            let _ = writeln!(out, "# Note: {note}");
        }
        out.push('\n');
        out.push_str(&toml::to_string_pretty(&self.document).unwrap_or_default());
        if !self.skipped.is_empty() {
            let _ = writeln!(out, "\n# Not imported from {source}:");
            for (option, why) in &self.skipped {
                let _ = writeln!(out, "#   {option}: {why}");
            }
        }
        out
    }
}

/// Why options of a kind are not imported (shared by both importers).
mod why {
    pub(super) const TCP_TLS: &str =
        "turn-relay speaks TURN over UDP only (no TCP, TLS or DTLS listeners yet)";
    pub(super) const LOGGING: &str =
        "turn-relay logs to stderr (the journal under systemd); log.format = \"json\" for log shippers";
    pub(super) const PROCESS: &str =
        "the systemd unit (config/turn-relay.service) runs it as its own user, in the foreground";
    pub(super) const BUILT_IN: &str = "built in, nothing to configure";
}

#[cfg(test)]
mod tests;
