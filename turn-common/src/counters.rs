//! Per-CPU counters of the XDP program: one slot per outcome (relayed kind, or the
//! reason a frame was passed to the stack or dropped). Every frame the program sees
//! lands in exactly one slot, so the sum over all slots is the number of frames seen.

/// Packets and bytes (whole frame length as received) of one outcome on one CPU.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, two `u64`s, no padding, every bit pattern valid.
unsafe impl aya::Pod for Counter {}

macro_rules! outcomes {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)+) => {
        /// The index of an outcome in the `COUNTERS` per-CPU array.
        #[repr(u32)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Outcome {
            $($(#[$doc])* $variant,)+
        }

        impl Outcome {
            /// Every outcome, in index order.
            pub const ALL: &'static [Outcome] = &[$(Outcome::$variant,)+];
            /// The number of slots of the `COUNTERS` array.
            pub const COUNT: u32 = Self::ALL.len() as u32;

            /// A stable snake_case name (metrics label).
            pub const fn name(self) -> &'static str {
                match self {
                    $(Outcome::$variant => $name,)+
                }
            }
        }
    };
}

outcomes! {
    /// Client → peer ChannelData relayed (RFC 8656 §12.4 / §12.6).
    RelayedChannelDataToPeer = "relayed_channel_data_to_peer",
    /// Client → peer Send indication relayed (RFC 8656 §11.2 / §11.3).
    RelayedSendToPeer = "relayed_send_to_peer",
    /// Peer → client relayed as ChannelData (RFC 8656 §12.5).
    RelayedChannelDataToClient = "relayed_channel_data_to_client",
    /// Peer → client relayed as a Data indication (RFC 8656 §11.4 / §11.5).
    RelayedDataIndicationToClient = "relayed_data_indication_to_client",
    /// Not IPv4/IPv6 (ARP, VLAN-tagged frames, ...).
    PassNotIp = "pass_not_ip",
    /// IPv4 with options, or IPv6 with extension headers.
    PassIpOptions = "pass_ip_options",
    /// IP fragment (first or later).
    PassFragment = "pass_fragment",
    /// Not UDP.
    PassNotUdp = "pass_not_udp",
    /// Header lengths disagree with the frame (truncated, lying lengths), or a wrong IPv4
    /// header checksum (the stack drops those).
    PassMalformed = "pass_malformed",
    /// UDP to an address that is neither a known client flow nor a relay address.
    PassUnknownFlow = "pass_unknown_flow",
    /// A STUN message for the server: requests, refreshes, and Send indications the fast
    /// path leaves to userspace (unknown flow, attributes it does not relay by).
    PassStun = "pass_stun",
    /// A Send indication whose FINGERPRINT does not match (RFC 8489 §7.3): left to
    /// userspace as it is.
    PassBadFingerprint = "pass_bad_fingerprint",
    /// ChannelData for a channel number that is not bound on this flow.
    PassChannelNotBound = "pass_channel_not_bound",
    /// The allocation, channel or permission entry has expired.
    PassExpired = "pass_expired",
    /// Send indication to a peer without a fast-path permission.
    PassNoPermission = "pass_no_permission",
    /// Send indication to a peer port its permission does not cover (the relay's own
    /// addresses are peers on relay ports only): userspace discards it.
    PassPeerPortNotPermitted = "pass_peer_port_not_permitted",
    /// Client and peer are of different address families and the frame is one the fast
    /// path cannot translate: IPv4 without a UDP checksum towards IPv6 (RFC 8200 §8.1).
    PassCrossFamily = "pass_cross_family",
    /// The rewritten frame would exceed the egress MTU.
    PassTooBig = "pass_too_big",
    /// bpf_fib_lookup gave no usable next hop (no route, no neighbour, needs fragmenting).
    PassNoRoute = "pass_no_route",
    /// The next hop is out of an interface the daemon did not attach the program to (not
    /// in its EGRESS device map): a redirect there may be dropped by the device, so the
    /// stack relays it.
    PassEgressNotAttached = "pass_egress_not_attached",
    /// TTL / hop limit too low to relay (RFC 8656 §14: outgoing = incoming - 1).
    PassTtl = "pass_ttl",
    /// A bpf_xdp_adjust_head/adjust_tail call failed.
    PassAdjustFailed = "pass_adjust_failed",
    /// The per-CPU scratch memory was unavailable (never expected).
    PassInternal = "pass_internal",
    /// Peer → relay address without a valid permission (RFC 8656 §9: discarded).
    DropNoPermission = "drop_no_permission",
    /// Data over the allocation's or the relay's bandwidth limit
    /// ([`crate::bandwidth`]): dropped, as userspace drops it.
    DropRateLimited = "drop_rate_limited",
}

impl Outcome {
    /// True for the outcomes whose frames the program drops.
    pub const fn is_drop(self) -> bool {
        matches!(self, Outcome::DropNoPermission | Outcome::DropRateLimited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_layout_is_two_u64() {
        assert_eq!(core::mem::size_of::<Counter>(), 16);
        assert_eq!(core::mem::align_of::<Counter>(), 8);
        assert_eq!(core::mem::offset_of!(Counter, packets), 0);
        assert_eq!(core::mem::offset_of!(Counter, bytes), 8);
    }

    #[test]
    fn outcome_indices_follow_the_table() {
        for (index, outcome) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*outcome as usize, index, "{}", outcome.name());
        }
        assert_eq!(Outcome::COUNT as usize, Outcome::ALL.len());
    }
}
