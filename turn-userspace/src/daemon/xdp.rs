//! Start-up choice of the fast path: attach the XDP program where the configuration asks,
//! or say plainly why userspace relays everything.

use std::net::{IpAddr, SocketAddr};

use anyhow::Context as _;

use crate::bpf::{BpfDatapath, XdpMode, XdpRelay};
use crate::daemon::config::Config;
use crate::protocol::datapath::{Datapath, InMemoryDatapath};

use super::interfaces::{self, Interface};
use super::report;

/// How a newcomer sees the fast path at work on one machine.
const FAST_PATH_DEMO: &str = "To see the fast path, run `cargo xtask demo`: client, relay and \
                              peer in network namespaces, with live counters per path";

/// Attaches XDP when the configuration asks for it. `auto` falls back to userspace-only
/// relaying with a log line saying why; so do `native`/`skb`, loudly. Then logs the
/// memory the relay needs at its configured caps.
pub(super) fn select_datapath(config: &Config) -> (Box<dyn Datapath>, Option<XdpRelay>) {
    let (datapath, relay, map_bytes) = choose_datapath(config);
    report::log_memory_budget(config, map_bytes);
    (datapath, relay)
}

/// The datapath, its XDP relay when attached, and the maps' kernel memory when known.
fn choose_datapath(config: &Config) -> (Box<dyn Datapath>, Option<XdpRelay>, Option<u64>) {
    let userspace = || -> Box<dyn Datapath> { Box::new(InMemoryDatapath::default()) };
    if config.xdp_mode == XdpMode::Off {
        tracing::info!("XDP: off (xdp.mode = \"off\"); userspace relays everything");
        return (userspace(), None, None);
    }
    let attached = interfaces_to_attach(config).and_then(|interfaces| {
        if interfaces.is_empty() {
            // Only loopback carries the relay's addresses (the loopback demo).
            tracing::info!(
                "XDP: not attached: on loopback the kernel delivers packets locally, so XDP \
                 can never relay them; this loopback demo relays everything in userspace. \
                 {FAST_PATH_DEMO}"
            );
            return Ok(None);
        }
        attach(config, interfaces).map(Some)
    });
    match attached {
        Ok(Some((relay, datapath, memory))) => {
            match memory {
                Some(bytes) => tracing::info!(
                    "{}; maps take {} KiB of kernel memory",
                    relay.status(),
                    bytes / 1024
                ),
                None => tracing::info!("{}", relay.status()),
            }
            (Box::new(datapath), Some(relay), memory)
        }
        Ok(None) => (userspace(), None, None),
        Err(error) if config.xdp_mode == XdpMode::Auto => {
            tracing::warn!(
                "XDP: not attached ({error:#}); falling back to userspace-only relaying"
            );
            (userspace(), None, None)
        }
        Err(error) => {
            tracing::error!(
                "XDP: mode \"{}\" could not be attached ({error:#}); relaying in userspace only",
                config.xdp_mode
            );
            (userspace(), None, None)
        }
    }
}

/// The interfaces named by `xdp.interfaces`, or else those holding the listen and relay
/// addresses, less loopback devices: XDP there never relays (local delivery).
fn interfaces_to_attach(config: &Config) -> anyhow::Result<Vec<String>> {
    if !config.xdp_interfaces.is_empty() {
        for name in &config.xdp_interfaces {
            if interfaces::is_loopback(name).unwrap_or(false) {
                tracing::info!(
                    "XDP on {name} (a loopback device) relays nothing: the kernel delivers \
                     loopback traffic locally, so userspace relays it. {FAST_PATH_DEMO}"
                );
            }
        }
        return Ok(config.xdp_interfaces.clone());
    }
    let mut addresses: Vec<IpAddr> = config.listen.iter().map(SocketAddr::ip).collect();
    addresses.extend(
        [config.relay_v4, config.relay_v6]
            .into_iter()
            .flatten()
            .map(|relay| relay.bind),
    );
    let holders = interfaces::interfaces_holding(&addresses)
        .context("finding the interfaces of the listen/relay addresses")?;
    let (loopback, attachable): (Vec<Interface>, Vec<Interface>) = holders
        .into_iter()
        .partition(|interface| interface.loopback);
    if !loopback.is_empty() && !attachable.is_empty() {
        let names: Vec<&str> = loopback.iter().map(|i| i.name.as_str()).collect();
        tracing::info!(
            "XDP: not attaching to {} (loopback): traffic there is relayed in userspace",
            names.join(", ")
        );
    }
    Ok(attachable
        .into_iter()
        .map(|interface| interface.name)
        .collect())
}

fn attach(
    config: &Config,
    interfaces: Vec<String>,
) -> anyhow::Result<(XdpRelay, BpfDatapath, Option<u64>)> {
    let relay = XdpRelay::attach(&config.xdp_settings(interfaces))?;
    let datapath = relay.datapath().context("opening the XDP maps")?;
    let memory = relay.map_memory_bytes().ok();
    Ok((relay, datapath, memory))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loopback_demo_attaches_nowhere() {
        let config = Config::embedded_default();
        assert_eq!(
            interfaces_to_attach(&config).expect("127.0.0.1 is on lo"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn listed_interfaces_are_attached_as_listed() {
        let config = Config::parse(
            "[server]\nrelay_address = \"127.0.0.1\"\n[xdp]\ninterfaces = [\"lo\", \"eth9\"]\n",
            "test",
        )
        .expect("valid");
        assert_eq!(
            interfaces_to_attach(&config).expect("listed"),
            vec!["lo".to_owned(), "eth9".to_owned()]
        );
    }

    #[test]
    fn a_relay_address_on_no_interface_is_an_error() {
        let config =
            Config::parse("[server]\nrelay_address = \"198.19.255.254\"\n", "test").expect("valid");
        let error = interfaces_to_attach(&config).expect_err("not assigned");
        assert!(format!("{error:#}").contains("198.19.255.254"), "{error:#}");
    }
}
