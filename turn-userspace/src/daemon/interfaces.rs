//! Which network interfaces carry given local addresses (getifaddrs), so XDP can be
//! attached where the listeners and relay sockets receive traffic, and which of them are
//! loopback devices (where XDP can never relay: the kernel delivers locally).

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;

use nix::ifaddrs::{getifaddrs, InterfaceAddress};
use nix::net::if_::InterfaceFlags;

/// A network interface of this host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Interface {
    pub(crate) name: String,
    pub(crate) loopback: bool,
}

/// The interfaces that hold any of `addresses`, sorted by name, without duplicates.
/// An address no interface holds is reported in the error.
pub(crate) fn interfaces_holding(addresses: &[IpAddr]) -> io::Result<Vec<Interface>> {
    let assigned: Vec<(Interface, IpAddr)> = getifaddrs()
        .map_err(io::Error::from)?
        .filter_map(|entry| Some((interface(&entry), ip(&entry)?)))
        .collect();
    let mut holders = BTreeSet::new();
    for address in addresses {
        match assigned.iter().find(|(_, assigned)| assigned == address) {
            Some((interface, _)) => {
                holders.insert(interface.clone());
            }
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no interface has the address {address}"),
                ))
            }
        }
    }
    Ok(holders.into_iter().collect())
}

/// Every address of this host, in interface order, without duplicates, less IPv6
/// link-local ones (listening on them needs a scope).
pub(crate) fn host_addresses() -> io::Result<Vec<IpAddr>> {
    let mut addresses = Vec::new();
    for entry in getifaddrs().map_err(io::Error::from)? {
        let Some(address) = ip(&entry) else {
            continue;
        };
        let link_local = matches!(address, IpAddr::V6(v6) if v6.is_unicast_link_local());
        if !link_local && !addresses.contains(&address) {
            addresses.push(address);
        }
    }
    Ok(addresses)
}

/// Whether the interface called `name` is a loopback device (false if there is none).
pub(crate) fn is_loopback(name: &str) -> io::Result<bool> {
    Ok(getifaddrs()
        .map_err(io::Error::from)?
        .any(|entry| entry.interface_name == name && interface(&entry).loopback))
}

fn interface(entry: &InterfaceAddress) -> Interface {
    Interface {
        name: entry.interface_name.clone(),
        loopback: entry.flags.contains(InterfaceFlags::IFF_LOOPBACK),
    }
}

fn ip(entry: &InterfaceAddress) -> Option<IpAddr> {
    let address = entry.address.as_ref()?;
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(IpAddr::V4(v4.ip()));
    }
    address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn loopback_address_is_on_lo() {
        let holders = interfaces_holding(&[
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
        ])
        .expect("127.0.0.1 is configured");
        assert_eq!(
            holders,
            vec![Interface {
                name: "lo".to_owned(),
                loopback: true
            }]
        );
        assert!(is_loopback("lo").expect("getifaddrs"));
        assert!(!is_loopback("no-such-if0").expect("getifaddrs"));
    }

    #[test]
    fn host_addresses_include_loopback_once() {
        let addresses = host_addresses().expect("getifaddrs");
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(addresses.iter().filter(|ip| **ip == loopback).count(), 1);
    }

    #[test]
    fn an_address_nobody_holds_is_an_error() {
        let error = interfaces_holding(&[IpAddr::V4(Ipv4Addr::new(198, 19, 255, 254))])
            .expect_err("not assigned");
        assert!(error.to_string().contains("198.19.255.254"));
    }
}
