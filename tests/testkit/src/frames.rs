//! Ethernet/IPv4/IPv6/UDP frames built with etherparse, with complete checksums (or a
//! zero UDP checksum where asked): the expected output of the XDP program is computed
//! here from scratch, never with the program's own incremental helpers, so a wrong
//! incremental update shows up as a byte difference.

use std::net::{IpAddr, SocketAddr};

use etherparse::{
    EtherType, Ethernet2Header, IpNumber, Ipv4Dscp, Ipv4Ecn, Ipv4Header, Ipv6FlowLabel, Ipv6Header,
    UdpHeader,
};

/// The IP header fields a frame sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ip {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 TTL / IPv6 hop limit.
    pub ttl: u8,
    /// IPv4 TOS / IPv6 traffic class (DSCP and ECN).
    pub tos: u8,
    /// IPv4 identification / IPv6 flow label.
    pub id: u16,
    /// IPv4 DF (ignored for IPv6).
    pub dont_fragment: bool,
}

impl Ip {
    /// TTL 64, TOS 0, identification 0, DF set.
    pub fn new(src: IpAddr, dst: IpAddr) -> Ip {
        Ip {
            src,
            dst,
            ttl: 64,
            tos: 0,
            id: 0,
            dont_fragment: true,
        }
    }
}

/// How the UDP checksum field is filled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpChecksum {
    /// Computed over the pseudo-header (0 sent as 0xFFFF, RFC 768).
    Compute,
    /// Left 0: no checksum (IPv4 only, RFC 768).
    Zero,
}

/// An Ethernet frame carrying one UDP datagram.
#[derive(Clone, Copy, Debug)]
pub struct UdpFrame<'a> {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub ip: Ip,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: &'a [u8],
    pub checksum: UdpChecksum,
}

impl<'a> UdpFrame<'a> {
    /// A datagram from `from` to `to` between the MACs `macs` (source, destination), with
    /// [`Ip::new`]'s header fields and a computed UDP checksum.
    pub fn between(
        macs: ([u8; 6], [u8; 6]),
        from: SocketAddr,
        to: SocketAddr,
        payload: &'a [u8],
    ) -> UdpFrame<'a> {
        UdpFrame {
            src_mac: macs.0,
            dst_mac: macs.1,
            ip: Ip::new(from.ip(), to.ip()),
            src_port: from.port(),
            dst_port: to.port(),
            payload,
            checksum: UdpChecksum::Compute,
        }
    }

    /// The frame's bytes. Panics when source and destination differ in family or the
    /// payload does not fit one datagram: test input, never network input.
    pub fn build(&self) -> Vec<u8> {
        let ip = self.ip;
        let mut out = Vec::with_capacity(14 + 40 + 8 + self.payload.len());
        let (ether_type, udp) = match (ip.src, ip.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let mut header = Ipv4Header::new(
                    (UdpHeader::LEN + self.payload.len()) as u16,
                    ip.ttl,
                    IpNumber::UDP,
                    src.octets(),
                    dst.octets(),
                )
                .expect("payload fits an IPv4 datagram");
                header.dscp = Ipv4Dscp::try_new(ip.tos >> 2).expect("6 bits");
                header.ecn = Ipv4Ecn::try_new(ip.tos & 3).expect("2 bits");
                header.identification = ip.id;
                header.dont_fragment = ip.dont_fragment;
                let udp = UdpHeader::with_ipv4_checksum(
                    self.src_port,
                    self.dst_port,
                    &header,
                    self.payload,
                )
                .expect("payload fits a UDP datagram");
                let mut ip_bytes = Vec::with_capacity(20);
                header.write(&mut ip_bytes).expect("writing to a Vec");
                (EtherType::IPV4, (ip_bytes, udp))
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                let header = Ipv6Header {
                    traffic_class: ip.tos,
                    flow_label: Ipv6FlowLabel::try_new(u32::from(ip.id)).expect("20 bits"),
                    payload_length: (UdpHeader::LEN + self.payload.len()) as u16,
                    next_header: IpNumber::UDP,
                    hop_limit: ip.ttl,
                    source: src.octets(),
                    destination: dst.octets(),
                };
                let udp = UdpHeader::with_ipv6_checksum(
                    self.src_port,
                    self.dst_port,
                    &header,
                    self.payload,
                )
                .expect("payload fits a UDP datagram");
                let mut ip_bytes = Vec::with_capacity(40);
                header.write(&mut ip_bytes).expect("writing to a Vec");
                (EtherType::IPV6, (ip_bytes, udp))
            }
            _ => panic!("mixed address families in one IP header"),
        };
        let (ip_bytes, mut udp) = udp;
        if self.checksum == UdpChecksum::Zero {
            udp.checksum = 0;
        }
        let ethernet = Ethernet2Header {
            source: self.src_mac,
            destination: self.dst_mac,
            ether_type,
        };
        out.extend_from_slice(&ethernet.to_bytes());
        out.extend_from_slice(&ip_bytes);
        out.extend_from_slice(&udp.to_bytes());
        out.extend_from_slice(self.payload);
        out
    }
}

/// Where the UDP header starts in a frame built by [`UdpFrame::build`] (no options).
pub fn udp_offset(frame: &[u8]) -> usize {
    if frame.get(12..14) == Some(&[0x08, 0x00]) {
        14 + 20
    } else {
        14 + 40
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    use turn_common::checksum::Delta;

    use super::*;

    const MACS: ([u8; 6], [u8; 6]) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);

    fn udp_frame<'a>(ip: Ip, payload: &'a [u8], checksum: UdpChecksum) -> UdpFrame<'a> {
        UdpFrame {
            src_mac: MACS.0,
            dst_mac: MACS.1,
            ip,
            src_port: 40_000,
            dst_port: 3478,
            payload,
            checksum,
        }
    }

    /// The ones'-complement sum over `bytes` is all ones exactly when a checksum inside
    /// them is right (RFC 1071), computed with turn-common's arithmetic.
    fn sums_to_zero(bytes: &[u8]) -> bool {
        Delta::new().add_bytes(bytes).checksum() == 0
    }

    #[test]
    fn ipv4_header_checksum_matches_a_known_header() {
        // 45 00 00 73 00 00 40 00 40 11 [b8 61] c0 a8 00 01 c0 a8 00 c7
        let ip = Ip::new(
            Ipv4Addr::new(192, 168, 0, 1).into(),
            Ipv4Addr::new(192, 168, 0, 199).into(),
        );
        let frame = udp_frame(ip, &[0; 0x73 - 28], UdpChecksum::Compute).build();
        assert_eq!(&frame[14..16], &[0x45, 0x00]);
        assert_eq!(&frame[24..26], &[0xb8, 0x61]);
    }

    #[test]
    fn ipv4_frames_carry_the_fields_and_valid_checksums() {
        let ip = Ip {
            ttl: 17,
            tos: 0xB8,
            id: 0x1234,
            dont_fragment: false,
            ..Ip::new(
                Ipv4Addr::new(198, 18, 1, 2).into(),
                Ipv4Addr::new(198, 18, 1, 1).into(),
            )
        };
        let frame = udp_frame(ip, b"odd-5", UdpChecksum::Compute).build();
        assert_eq!(frame.len(), 14 + 20 + 8 + 5);
        assert_eq!(&frame[..12], &[MACS.1, MACS.0].concat()[..]);
        let sliced = SlicedPacket::from_ethernet(&frame).expect("parses");
        let Some(NetSlice::Ipv4(ipv4)) = sliced.net else {
            panic!("not IPv4");
        };
        let header = ipv4.header();
        assert_eq!(
            (
                header.ttl(),
                header.identification(),
                header.dont_fragment()
            ),
            (17, 0x1234, false)
        );
        assert_eq!((header.dcp().value() << 2) | header.ecn().value(), 0xB8);
        assert!(sums_to_zero(&frame[14..34]), "IPv4 header checksum");
        let Some(TransportSlice::Udp(udp)) = sliced.transport else {
            panic!("not UDP");
        };
        assert_eq!((udp.source_port(), udp.destination_port()), (40_000, 3478));
        assert_eq!(udp.payload(), b"odd-5");
        let mut pseudo = frame[26..34].to_vec();
        pseudo.extend_from_slice(&[0, 17, 0, 13]);
        pseudo.extend_from_slice(&frame[34..]);
        assert!(sums_to_zero(&pseudo), "UDP checksum over the pseudo-header");
    }

    #[test]
    fn ipv6_frames_carry_traffic_class_flow_label_and_a_valid_checksum() {
        let ip = Ip {
            tos: 0xB8,
            id: 0x1234,
            ..Ip::new(
                Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 2).into(),
                Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 1).into(),
            )
        };
        let frame = udp_frame(ip, b"hello, peer!", UdpChecksum::Compute).build();
        assert_eq!(&frame[12..14], &[0x86, 0xDD]);
        assert_eq!(
            &frame[14..18],
            &[0x6B, 0x80, 0x12, 0x34],
            "version, class, label"
        );
        assert_eq!(
            &frame[18..22],
            &[0, 20, 17, 64],
            "length, next header, hop limit"
        );
        let mut pseudo = frame[22..54].to_vec();
        pseudo.extend_from_slice(&[0, 0, 0, 20, 0, 0, 0, 17]);
        pseudo.extend_from_slice(&frame[54..]);
        assert!(sums_to_zero(&pseudo), "UDP checksum over the pseudo-header");
        assert_eq!(udp_offset(&frame), 54);
    }

    #[test]
    fn a_zero_udp_checksum_stays_zero() {
        let ip = Ip::new(
            Ipv4Addr::new(198, 18, 1, 2).into(),
            Ipv4Addr::new(198, 18, 1, 1).into(),
        );
        let frame = udp_frame(ip, b"data", UdpChecksum::Zero).build();
        assert_eq!(udp_offset(&frame), 34);
        assert_eq!(&frame[40..42], &[0, 0]);
        assert!(sums_to_zero(&frame[14..34]));
    }
}
