//! Which peer addresses the relay may send to (RFC 8656 §21, "Security Considerations":
//! a TURN server must not become a way into the operator's own network).
//!
//! One policy serves CreatePermission, ChannelBind and Send (RFC 8656 §9.1, §11, §12:
//! a forbidden peer is answered with 403 Forbidden), in the userspace relay and, through
//! the entries the core installs, in the fast path.
//!
//! An address is judged as written, in this order:
//! 1. an explicit `deny` entry refuses, whatever else matches;
//! 2. the relay's own addresses are allowed on the relay port range only (hairpinning
//!    between two allocations), never on a listener port or another local service,
//!    whatever `allow` says;
//! 3. an explicit `allow` entry allows, even inside the built-in deny ranges;
//! 4. the built-in deny ranges refuse: every range of the IANA IPv4 and IPv6
//!    special-purpose address registries that is not globally reachable (private,
//!    shared, loopback, link-local incl. the cloud metadata address 169.254.169.254,
//!    documentation, benchmarking, multicast, reserved) and the translation prefixes
//!    (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo) — eturnal's "recommended" list
//!    and more;
//! 5. everything else is allowed.
//!
//! An IPv6 address that carries an IPv4 address the packet ends up at (IPv4-mapped,
//! IPv4-compatible, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`, Teredo `2001::/32`) must pass
//! as itself *and* as that IPv4 address: allowing NAT64 does not open `10.0.0.0/8` through
//! it. The address stays the one the client wrote; nothing is rewritten.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Why a peer address was refused (→ 403 Forbidden).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PeerDenied {
    #[error("peer {0} is in a configured deny range")]
    Configured(IpAddr),
    #[error("peer {0} is in a range relays never reach unless allowed (private, loopback, link-local, documentation, multicast, ...)")]
    DefaultDeny(IpAddr),
}

impl PeerDenied {
    /// The STUN error code to answer with (RFC 8656 §9.1).
    pub fn stun_error_code(&self) -> u16 {
        403
    }
}

/// Which ports of an allowed peer IP may be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerPorts {
    Any,
    /// The relay's own address: only its relay ports (other allocations).
    RelayRange,
}

/// IPv4 ranges of the IANA IPv4 Special-Purpose Address Registry that are not globally
/// reachable, plus multicast and the deprecated 6to4 relay anycast.
const BUILT_IN_DENY_V4: [Ipv4Net; 15] = [
    v4([0, 0, 0, 0], 8),       // "this network" (RFC 791)
    v4([10, 0, 0, 0], 8),      // private (RFC 1918)
    v4([100, 64, 0, 0], 10),   // shared address space, CGN (RFC 6598); 100.100.100.200
    v4([127, 0, 0, 0], 8),     // loopback (RFC 1122)
    v4([169, 254, 0, 0], 16),  // link-local, cloud metadata 169.254.169.254 (RFC 3927)
    v4([172, 16, 0, 0], 12),   // private (RFC 1918)
    v4([192, 0, 0, 0], 24),    // IETF protocol assignments (RFC 6890)
    v4([192, 0, 2, 0], 24),    // TEST-NET-1 (RFC 5737)
    v4([192, 88, 99, 0], 24),  // deprecated 6to4 relay anycast (RFC 7526)
    v4([192, 168, 0, 0], 16),  // private (RFC 1918)
    v4([198, 18, 0, 0], 15),   // benchmarking (RFC 2544)
    v4([198, 51, 100, 0], 24), // TEST-NET-2 (RFC 5737)
    v4([203, 0, 113, 0], 24),  // TEST-NET-3 (RFC 5737)
    v4([224, 0, 0, 0], 4),     // multicast (RFC 5771)
    v4([240, 0, 0, 0], 4),     // reserved, incl. broadcast 255.255.255.255 (RFC 1112)
];

/// IPv6 ranges of the IANA IPv6 Special-Purpose Address Registry that are not globally
/// reachable, the translation prefixes, and multicast.
const BUILT_IN_DENY_V6: [Ipv6Net; 14] = [
    v6([0, 0, 0, 0, 0, 0, 0, 0], 96), // ::/128, ::1/128, IPv4-compatible (RFC 4291)
    v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96), // IPv4-mapped (RFC 4291)
    v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96), // NAT64 well-known prefix (RFC 6052)
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), // NAT64 local use (RFC 8215)
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), // discard-only (RFC 6666)
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), // IETF protocol assignments, Teredo, benchmarking
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), // documentation (RFC 3849)
    v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16), // 6to4 (RFC 3056)
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), // documentation (RFC 9637)
    v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16), // SRv6 SIDs (RFC 9602)
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), // unique local (RFC 4193)
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), // link-local (RFC 4291)
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), // multicast (RFC 4291)
    v6([0x2001, 0x2, 0, 0, 0, 0, 0, 0], 48), // benchmarking (RFC 5180), inside 2001::/23
];

const fn v4(octets: [u8; 4], prefix: u8) -> Ipv4Net {
    Ipv4Net::new_assert(
        Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]),
        prefix,
    )
}

const fn v6(s: [u16; 8], prefix: u8) -> Ipv6Net {
    Ipv6Net::new_assert(
        Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
        prefix,
    )
}

/// The relay ports the policy assumes until [`PeerPolicy::with_relay_ports`] says
/// otherwise (the server's default range).
const DEFAULT_RELAY_PORTS: RangeInclusive<u16> = 49152..=65535;

/// The peer address policy.
#[derive(Debug, Clone)]
pub struct PeerPolicy {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    relay_addrs: Vec<IpAddr>,
    relay_ports: RangeInclusive<u16>,
}

impl PeerPolicy {
    /// `relay_addrs` are the relay's own addresses (bind and advertised). IPv4-mapped
    /// networks in `allow`/`deny` are taken as the IPv4 networks they map.
    pub fn new(allow: Vec<IpNet>, deny: Vec<IpNet>, relay_addrs: Vec<IpAddr>) -> Self {
        PeerPolicy {
            allow: allow.into_iter().map(mapped_net_as_v4).collect(),
            deny: deny.into_iter().map(mapped_net_as_v4).collect(),
            relay_addrs,
            relay_ports: DEFAULT_RELAY_PORTS,
        }
    }

    /// The relay port range: the only ports of the relay's own addresses a peer may have.
    /// The server sets its own range here, so the two cannot disagree.
    pub fn with_relay_ports(mut self, relay_ports: RangeInclusive<u16>) -> Self {
        self.relay_ports = relay_ports;
        self
    }

    /// Whether `ip` may be a peer, and on which ports (CreatePermission: RFC 8656 §9.1
    /// ignores ports, so a permission for the relay's own address covers its relay ports).
    pub fn check(&self, ip: IpAddr) -> Result<PeerPorts, PeerDenied> {
        let ports = self.judge(ip)?;
        match embedded_ipv4(ip) {
            Some(v4) => match self.judge(IpAddr::V4(v4))? {
                PeerPorts::RelayRange => Ok(PeerPorts::RelayRange),
                PeerPorts::Any => Ok(ports),
            },
            None => Ok(ports),
        }
    }

    /// Whether a permission with `ports` covers `port` (ChannelBind, Send).
    pub fn allows_port(&self, ports: PeerPorts, port: u16) -> bool {
        self.ports(ports).contains(&port)
    }

    /// The ports a permission with `ports` covers.
    pub fn ports(&self, ports: PeerPorts) -> RangeInclusive<u16> {
        match ports {
            PeerPorts::Any => 0..=u16::MAX,
            PeerPorts::RelayRange => self.relay_ports.clone(),
        }
    }

    /// Steps 1–5 of the module documentation for one address as written.
    fn judge(&self, ip: IpAddr) -> Result<PeerPorts, PeerDenied> {
        if self.deny.iter().any(|net| net.contains(&ip)) {
            return Err(PeerDenied::Configured(ip));
        }
        if self.relay_addrs.contains(&ip) {
            return Ok(PeerPorts::RelayRange);
        }
        if !self.allow.iter().any(|net| net.contains(&ip)) && is_built_in_denied(ip) {
            return Err(PeerDenied::DefaultDeny(ip));
        }
        Ok(PeerPorts::Any)
    }
}

fn is_built_in_denied(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => BUILT_IN_DENY_V4.iter().any(|net| net.contains(&v4)),
        IpAddr::V6(v6) => BUILT_IN_DENY_V6.iter().any(|net| net.contains(&v6)),
    }
}

/// The IPv4 address a packet to `ip` ends up at, for the IPv6 forms that carry one:
/// IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d` (not `::` or `::1`), NAT64
/// `64:ff9b::a.b.c.d` (RFC 6052), 6to4 `2002:aabb:ccdd::/48` (RFC 3056) and Teredo
/// `2001:0:<server>:<flags>:<port>:<client XOR ffff:ffff>` (RFC 4380).
pub fn embedded_ipv4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else {
        return None;
    };
    let s = v6.segments();
    let low = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    match s {
        [0, 0, 0, 0, 0, 0xffff, high, low_half] => Some(low(high, low_half)),
        [0, 0, 0, 0, 0, 0, high, low_half] if !(high == 0 && low_half <= 1) => {
            Some(low(high, low_half))
        }
        [0x64, 0xff9b, 0, 0, 0, 0, high, low_half] => Some(low(high, low_half)),
        [0x2002, high, low_half, ..] => Some(low(high, low_half)),
        [0x2001, 0, .., high, low_half] => Some(low(!high, !low_half)),
        _ => None,
    }
}

/// Whether `ip` is an IPv4 address written in IPv6 form: IPv4-mapped `::ffff:a.b.c.d` or
/// IPv4-compatible `::a.b.c.d`. Such a peer is an IPv4 peer, whatever family it is
/// written in (RFC 8656 §9.1, §12.1: a peer of the other family is answered with 443).
pub fn is_ipv4_written_as_ipv6(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(_) => false,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) && embedded_ipv4(ip).is_some()
        }
    }
}

/// An IPv4-mapped network (`::ffff:10.0.0.0/104`) is the IPv4 network (`10.0.0.0/8`).
/// Other networks stay as written: denying `64:ff9b::/96` must not deny all of IPv4.
fn mapped_net_as_v4(net: IpNet) -> IpNet {
    let IpNet::V6(v6) = net else { return net };
    match (v6.addr().to_ipv4_mapped(), v6.prefix_len().checked_sub(96)) {
        (Some(v4), Some(prefix)) => Ipv4Net::new(v4, prefix).map_or(net, IpNet::V4),
        _ => net,
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter()
            .map(|n| n.parse().expect("test network"))
            .collect()
    }

    fn allowed(policy: &PeerPolicy, peer: &str) -> bool {
        policy.check(ip(peer)).is_ok()
    }

    /// Whether `peer` may be sent to: its IP and, for the relay's own addresses, its port.
    fn transport_allowed(policy: &PeerPolicy, peer: SocketAddr) -> bool {
        policy
            .check(peer.ip())
            .is_ok_and(|ports| policy.allows_port(ports, peer.port()))
    }

    #[test]
    fn built_in_deny_covers_the_special_purpose_registries() {
        let policy = PeerPolicy::new(vec![], vec![], vec![]);
        let denied = [
            "0.1.2.3",
            "10.1.2.3",
            "100.64.0.1",
            "100.100.100.200", // Alibaba cloud metadata
            "127.0.0.1",
            "127.8.9.10",
            "169.254.169.254", // cloud metadata
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.1",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::127.0.0.1",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:2::1",
            "2001:db8::1",
            "2002:808:808::1",
            "3fff::1",
            "5f00::1",
            "fc00::1",
            "fd00:ec2::254", // AWS metadata over IPv6
            "fe80::1",
            "febf::1",
            "ff02::1",
            "ff0e::1",
        ];
        for peer in denied {
            assert!(!allowed(&policy, peer), "{peer} must be denied by default");
        }
        for peer in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "198.17.255.255",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700::1111",
            "2a00:1450::1",
            "fec0::1",
        ] {
            assert!(allowed(&policy, peer), "{peer} must be allowed by default");
        }
    }

    #[test]
    fn embedded_ipv4_addresses_are_extracted() {
        let table = [
            ("::ffff:1.2.3.4", Some("1.2.3.4")),
            ("::1.2.3.4", Some("1.2.3.4")),
            ("::", None),
            ("::1", None),
            ("64:ff9b::1.2.3.4", Some("1.2.3.4")),
            ("2002:0102:0304::1", Some("1.2.3.4")),
            // Teredo: server 65.54.227.120, client 192.0.2.45 obfuscated (RFC 4380 §4).
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", Some("192.0.2.45")),
            ("2001:db8::1.2.3.4", None),
            ("64:ff9b:1::1.2.3.4", None),
            ("1.2.3.4", None),
        ];
        for (address, expected) in table {
            assert_eq!(
                embedded_ipv4(ip(address)),
                expected.map(|v4| v4.parse().expect("v4")),
                "{address}"
            );
        }
        for (address, written_as_ipv6) in [
            ("::ffff:1.2.3.4", true),
            ("::1.2.3.4", true),
            ("::", false),
            ("::1", false),
            ("64:ff9b::1.2.3.4", false),
            ("2002:0102:0304::1", false),
            ("1.2.3.4", false),
        ] {
            assert_eq!(
                is_ipv4_written_as_ipv6(ip(address)),
                written_as_ipv6,
                "{address}"
            );
        }
    }

    #[test]
    fn allowing_a_translation_prefix_keeps_its_embedded_ipv4_checked() {
        let policy = PeerPolicy::new(
            nets(&["64:ff9b::/96", "2002::/16", "2001::/32"]),
            nets(&["8.8.4.0/24"]),
            vec![],
        );
        let table = [
            ("64:ff9b::8.8.8.8", true),
            ("64:ff9b::10.0.0.1", false),
            ("64:ff9b::127.0.0.1", false),
            ("64:ff9b::169.254.169.254", false),
            ("64:ff9b::8.8.4.4", false),
            ("2002:808:808::1", true),
            ("2002:a00:1::1", false),
            // Teredo with client 8.8.8.8, then with client 127.0.0.1.
            ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", true),
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", false),
        ];
        for (peer, expected) in table {
            assert_eq!(allowed(&policy, peer), expected, "{peer}");
        }
        assert_eq!(
            policy.check(ip("64:ff9b::808:404")),
            Err(PeerDenied::Configured(ip("8.8.4.4")))
        );
    }

    #[test]
    fn explicit_allow_beats_built_in_deny_and_explicit_deny_beats_all() {
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
        let table: &[(&str, Result<PeerPorts, PeerDenied>)] = &[
            ("127.0.0.1", Ok(PeerPorts::Any)),
            ("fe80::5", Ok(PeerPorts::Any)),
            (
                "fe80:0:0:1::5",
                Err(PeerDenied::DefaultDeny(ip("fe80:0:0:1::5"))),
            ),
            ("10.1.0.1", Ok(PeerPorts::Any)),
            ("10.9.0.1", Err(PeerDenied::Configured(ip("10.9.0.1")))),
            // Deny wins over the relay's own address and over allow.
            ("127.0.0.2", Err(PeerDenied::Configured(ip("127.0.0.2")))),
            ("198.18.1.1", Err(PeerDenied::Configured(ip("198.18.1.1")))),
            // A mapped deny network is the IPv4 network.
            (
                "203.0.113.9",
                Err(PeerDenied::Configured(ip("203.0.113.9"))),
            ),
            (
                "169.254.169.254",
                Err(PeerDenied::DefaultDeny(ip("169.254.169.254"))),
            ),
            // Mapped forms are judged as themselves and as the IPv4 address they carry.
            (
                "::ffff:127.0.0.1",
                Err(PeerDenied::DefaultDeny(ip("::ffff:127.0.0.1"))),
            ),
            (
                "::ffff:10.9.0.1",
                Err(PeerDenied::DefaultDeny(ip("::ffff:10.9.0.1"))),
            ),
        ];
        for (peer, expected) in table {
            assert_eq!(policy.check(ip(peer)), *expected, "peer {peer}");
        }
    }

    #[test]
    fn the_relays_own_addresses_are_peers_on_relay_ports_only() {
        let own_v4 = "198.18.0.1";
        let own_public = "203.0.113.7";
        let own_v6 = "2001:db8::1";
        let policy = PeerPolicy::new(
            nets(&["198.18.0.0/15"]), // allow does not open the relay's other ports
            vec![],
            vec![ip(own_v4), ip(own_public), ip(own_v6)],
        )
        .with_relay_ports(50000..=50999);
        for own in [own_v4, own_public, own_v6] {
            assert_eq!(policy.check(ip(own)), Ok(PeerPorts::RelayRange));
            for (port, allowed) in [(50000, true), (50999, true), (3478, false), (22, false)] {
                let peer = SocketAddr::new(ip(own), port);
                assert_eq!(transport_allowed(&policy, peer), allowed, "{peer}");
            }
        }
        // The NAT64 form of an own address is limited the same way (once NAT64 is allowed).
        let nat64 = PeerPolicy::new(nets(&["64:ff9b::/96"]), vec![], vec![ip(own_public)]);
        assert_eq!(
            nat64.check(ip("64:ff9b::203.0.113.7")),
            Ok(PeerPorts::RelayRange)
        );
        // Other peers, also on the same subnet, keep every port.
        assert!(transport_allowed(
            &policy,
            "198.18.0.2:22".parse().expect("addr")
        ));
        assert_eq!(PeerDenied::DefaultDeny(ip("::1")).stun_error_code(), 403);
    }
}
