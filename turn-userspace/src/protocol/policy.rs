//! Which peer addresses the relay may send to (RFC 8656 §21, "Security Considerations":
//! a TURN server must not become a way into the operator's own network).
//!
//! One check serves CreatePermission, ChannelBind and Send (RFC 8656 §9.1, §11, §12:
//! a forbidden peer is answered with 403 Forbidden).
//!
//! Order of decisions, after canonicalising the peer address:
//! 1. an explicit `deny` entry refuses, whatever else matches;
//! 2. the relay's own addresses are allowed (hairpinning between two allocations);
//! 3. an explicit `allow` entry allows, even inside the default-deny ranges;
//! 4. the default-deny ranges refuse (loopback, unspecified, link-local incl. the cloud
//!    metadata address 169.254.169.254, multicast, IPv4 broadcast, and the IPv6 equivalents);
//! 5. everything else is allowed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Why a peer address was refused (→ 403 Forbidden).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PeerDenied {
    #[error("peer {0} is in a configured deny range")]
    Configured(IpAddr),
    #[error("peer {0} is in a range relays never reach unless allowed (loopback, link-local, multicast, ...)")]
    DefaultDeny(IpAddr),
}

impl PeerDenied {
    /// The STUN error code to answer with (RFC 8656 §9.1).
    pub fn stun_error_code(&self) -> u16 {
        403
    }
}

/// The peer address policy.
#[derive(Debug, Clone)]
pub struct PeerPolicy {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    relay_addrs: Vec<IpAddr>,
}

impl PeerPolicy {
    /// IPv4-mapped networks in `allow`/`deny` are taken as the IPv4 networks they map.
    /// `allow` is matched against the canonical peer address only; `deny` against both the
    /// canonical and the written form (so `deny = ["64:ff9b::/96"]` refuses NAT64 peers).
    pub fn new(allow: Vec<IpNet>, deny: Vec<IpNet>, relay_addrs: Vec<IpAddr>) -> Self {
        PeerPolicy {
            allow: allow.into_iter().map(canonical_net).collect(),
            deny: deny.into_iter().map(canonical_net).collect(),
            relay_addrs: relay_addrs.into_iter().map(canonical_ip).collect(),
        }
    }

    /// One check used by CreatePermission, ChannelBind and Send (→ 403 Forbidden).
    pub fn check(&self, peer: IpAddr) -> Result<(), PeerDenied> {
        let written = peer;
        let peer = canonical_ip(peer);
        if self
            .deny
            .iter()
            .any(|net| net.contains(&peer) || net.contains(&written))
        {
            return Err(PeerDenied::Configured(peer));
        }
        if self.relay_addrs.contains(&peer) || self.allow.iter().any(|net| net.contains(&peer)) {
            return Ok(());
        }
        if is_default_denied(peer) {
            return Err(PeerDenied::DefaultDeny(peer));
        }
        Ok(())
    }
}

/// The address a packet to `ip` really reaches: IPv4-mapped (`::ffff:a.b.c.d`), NAT64
/// well-known prefix (`64:ff9b::a.b.c.d`, RFC 6052) and deprecated IPv4-compatible
/// (`::a.b.c.d`, except `::` and `::1`) forms become the IPv4 address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => embedded_ipv4(v6).map_or(ip, IpAddr::V4),
    }
}

fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let segments = v6.segments();
    let octets = v6.octets();
    let low = Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low);
    }
    if segments[..6] == [0; 6] && !v6.is_unspecified() && !v6.is_loopback() {
        return Some(low);
    }
    None
}

/// An IPv4-mapped network (`::ffff:10.0.0.0/104`) is the IPv4 network (`10.0.0.0/8`).
/// Other networks stay as written: denying `64:ff9b::/96` must not deny all of IPv4.
fn canonical_net(net: IpNet) -> IpNet {
    let IpNet::V6(v6) = net else { return net };
    match (v6.addr().to_ipv4_mapped(), v6.prefix_len().checked_sub(96)) {
        (Some(v4), Some(prefix)) => ipnet::Ipv4Net::new(v4, prefix).map_or(net, IpNet::V4),
        _ => net,
    }
}

/// Ranges a relay never reaches unless explicitly allowed.
fn is_default_denied(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_unspecified()
                || v4.octets()[0] == 0 // 0.0.0.0/8, "this network" (RFC 1122 §3.2.1.3)
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || v6.is_multicast()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter()
            .map(|n| n.parse().expect("test network"))
            .collect()
    }

    #[test]
    fn default_policy_table() {
        let policy = PeerPolicy::new(vec![], vec![], vec![]);
        let table: &[(&str, bool)] = &[
            ("198.18.0.1", true),
            ("8.8.8.8", true),
            ("10.1.2.3", true),
            ("2001:db8::1", true),
            ("127.0.0.1", false),
            ("127.8.9.10", false),
            ("0.0.0.0", false),
            ("0.1.2.3", false),
            ("169.254.169.254", false),
            ("169.254.0.1", false),
            ("224.0.0.1", false),
            ("239.255.255.250", false),
            ("255.255.255.255", false),
            ("::1", false),
            ("::", false),
            ("fe80::1", false),
            ("febf::1", false),
            ("fec0::1", true),
            ("ff02::1", false),
            ("ff0e::1", false),
            // IPv4-mapped, NAT64 and IPv4-compatible disguises of denied IPv4 addresses.
            ("::ffff:127.0.0.1", false),
            ("::ffff:169.254.169.254", false),
            ("64:ff9b::127.0.0.1", false),
            ("64:ff9b::a9fe:a9fe", false),
            ("::127.0.0.1", false),
            ("::ffff:255.255.255.255", false),
            ("::ffff:198.18.0.1", true),
            ("64:ff9b::198.18.0.1", true),
            ("64:ff9b:1::127.0.0.1", true), // local-use NAT64 prefix is not the well-known one
        ];
        for (peer, allowed) in table {
            assert_eq!(policy.check(ip(peer)).is_ok(), *allowed, "peer {peer}");
        }
    }

    #[test]
    fn explicit_allow_beats_default_deny_and_explicit_deny_beats_all() {
        let policy = PeerPolicy::new(
            nets(&["127.0.0.0/8", "10.0.0.0/8", "fe80::/64"]),
            nets(&[
                "127.0.0.2/32",
                "10.9.0.0/16",
                "198.18.1.0/24",
                "::ffff:203.0.113.0/120",
            ]),
            vec![ip("198.18.1.1"), ip("127.0.0.2")],
        );
        let table: &[(&str, Result<(), PeerDenied>)] = &[
            ("127.0.0.1", Ok(())),
            ("::ffff:127.0.0.1", Ok(())),
            ("64:ff9b::7f00:1", Ok(())),
            ("fe80::5", Ok(())),
            (
                "fe80:0:0:1::5",
                Err(PeerDenied::DefaultDeny(ip("fe80:0:0:1::5"))),
            ),
            ("10.1.0.1", Ok(())),
            ("10.9.0.1", Err(PeerDenied::Configured(ip("10.9.0.1")))),
            (
                "::ffff:10.9.0.1",
                Err(PeerDenied::Configured(ip("10.9.0.1"))),
            ),
            // Deny wins over the relay's own address and over allow.
            ("127.0.0.2", Err(PeerDenied::Configured(ip("127.0.0.2")))),
            ("198.18.1.1", Err(PeerDenied::Configured(ip("198.18.1.1")))),
            // A mapped deny network is the IPv4 network.
            (
                "203.0.113.9",
                Err(PeerDenied::Configured(ip("203.0.113.9"))),
            ),
            (
                "::ffff:203.0.113.9",
                Err(PeerDenied::Configured(ip("203.0.113.9"))),
            ),
            (
                "169.254.169.254",
                Err(PeerDenied::DefaultDeny(ip("169.254.169.254"))),
            ),
        ];
        for (peer, expected) in table {
            assert_eq!(policy.check(ip(peer)), *expected, "peer {peer}");
        }
    }

    #[test]
    fn denying_the_nat64_prefix_refuses_nat64_peers_only() {
        let policy = PeerPolicy::new(vec![], nets(&["64:ff9b::/96"]), vec![]);
        assert_eq!(
            policy.check(ip("64:ff9b::198.18.0.1")),
            Err(PeerDenied::Configured(ip("198.18.0.1")))
        );
        assert_eq!(policy.check(ip("198.18.0.1")), Ok(()));
    }

    #[test]
    fn relay_own_addresses_are_allowed_for_hairpinning() {
        let policy = PeerPolicy::new(vec![], vec![], vec![ip("127.0.0.1"), ip("::1")]);
        assert_eq!(policy.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(policy.check(ip("::ffff:127.0.0.1")), Ok(()));
        assert_eq!(policy.check(ip("::1")), Ok(()));
        assert!(policy.check(ip("127.0.0.3")).is_err());
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(canonical_ip(ip("::ffff:1.2.3.4")), ip("1.2.3.4"));
        assert_eq!(canonical_ip(ip("64:ff9b::1.2.3.4")), ip("1.2.3.4"));
        assert_eq!(canonical_ip(ip("::1.2.3.4")), ip("1.2.3.4"));
        assert_eq!(canonical_ip(ip("::1")), ip("::1"));
        assert_eq!(canonical_ip(ip("::")), ip("::"));
        assert_eq!(
            canonical_ip(ip("2001:db8::1.2.3.4")),
            ip("2001:db8::102:304")
        );
        assert_eq!(PeerDenied::DefaultDeny(ip("::1")).stun_error_code(), 403);
    }
}
