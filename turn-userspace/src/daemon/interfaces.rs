//! Which network interfaces carry given local addresses (getifaddrs), so XDP can be
//! attached where the listeners and relay sockets receive traffic.

use std::collections::BTreeSet;
use std::ffi::CStr;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Names of the interfaces that hold any of `addresses`, sorted, without duplicates.
/// An address no interface holds is reported in the error.
pub(crate) fn interfaces_holding(addresses: &[IpAddr]) -> io::Result<Vec<String>> {
    let assigned = interface_addresses()?;
    let mut names = BTreeSet::new();
    for address in addresses {
        let holder = assigned.iter().find(|(_, assigned)| assigned == address);
        match holder {
            Some((name, _)) => {
                names.insert(name.clone());
            }
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no interface has the address {address}"),
                ))
            }
        }
    }
    Ok(names.into_iter().collect())
}

/// Every (interface name, address) pair of this host.
fn interface_addresses() -> io::Result<Vec<(String, IpAddr)>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut found = Vec::new();
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        if let (Some(address), false) = (socket_ip(entry.ifa_addr), entry.ifa_name.is_null()) {
            // SAFETY: ifa_name is a NUL-terminated string owned by the list.
            let name = unsafe { CStr::from_ptr(entry.ifa_name) }
                .to_string_lossy()
                .into_owned();
            found.push((name, address));
        }
        cursor = entry.ifa_next;
    }
    // SAFETY: `list` came from getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(list) };
    Ok(found)
}

fn socket_ip(address: *const libc::sockaddr) -> Option<IpAddr> {
    if address.is_null() {
        return None;
    }
    // SAFETY: non-null socket address from getifaddrs; its family says which struct it is.
    unsafe {
        match i32::from((*address).sa_family) {
            libc::AF_INET => {
                let v4 = &*address.cast::<libc::sockaddr_in>();
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr))))
            }
            libc::AF_INET6 => {
                let v6 = &*address.cast::<libc::sockaddr_in6>();
                Some(IpAddr::V6(Ipv6Addr::from(v6.sin6_addr.s6_addr)))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_address_is_on_lo() {
        let names = interfaces_holding(&[
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
        ])
        .expect("127.0.0.1 is configured");
        assert_eq!(names, vec!["lo".to_owned()]);
    }

    #[test]
    fn an_address_nobody_holds_is_an_error() {
        let error = interfaces_holding(&[IpAddr::V4(Ipv4Addr::new(198, 19, 255, 254))])
            .expect_err("not assigned");
        assert!(error.to_string().contains("198.19.255.254"));
    }
}
