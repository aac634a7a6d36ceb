//! ChannelData framing (RFC 8656 §12.4–12.5).

use std::ops::Range;

use super::padded_len;

/// Size of the ChannelData header (channel number + length).
pub const HEADER_LEN: usize = 4;
/// Accepted channel numbers: RFC 8656 §12's 0x4000–0x4FFF plus the rest of RFC 5766's
/// 0x4000–0x7FFF, which deployed clients still use (see `turn_common::stun::CHANNEL_MAX`).
pub const CHANNEL_RANGE: std::ops::RangeInclusive<u16> =
    turn_common::stun::CHANNEL_MIN..=turn_common::stun::CHANNEL_MAX;

/// Whether a datagram on a listening socket is ChannelData rather than STUN: the first
/// two bits are 0b01 (RFC 8656 §12; STUN messages start with 0b00).
pub fn is_channel_data(packet: &[u8]) -> bool {
    packet.first().is_some_and(|b| b & 0xC0 == 0x40)
}

/// A ChannelData message borrowing the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelData<'a> {
    pub number: u16,
    pub data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Parses a ChannelData datagram. Over UDP the padding to 4 bytes is optional, so
    /// both padded and unpadded datagrams are accepted; anything shorter than the length
    /// field, longer than the padded length, or outside 0x4000–0x7FFF is rejected
    /// (RFC 8656 §12.4–12.5).
    pub fn parse(packet: &'a [u8]) -> Option<ChannelData<'a>> {
        let range = Self::data_range(packet)?;
        let number = u16::from_be_bytes([*packet.first()?, *packet.get(1)?]);
        Some(ChannelData {
            number,
            data: packet.get(range)?,
        })
    }

    /// The application data's position inside `packet` (for zero-copy forwarding).
    pub fn data_range(packet: &[u8]) -> Option<Range<usize>> {
        let number = u16::from_be_bytes([*packet.first()?, *packet.get(1)?]);
        if !CHANNEL_RANGE.contains(&number) {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]));
        let end = HEADER_LEN + len;
        if packet.len() < end || packet.len() > HEADER_LEN + padded_len(len) {
            return None;
        }
        Some(HEADER_LEN..end)
    }
}

/// Writes a ChannelData message (unpadded, as allowed over UDP) into `out`, replacing
/// its contents but keeping its capacity. Data longer than 65535 bytes is cut.
pub fn encode(out: &mut Vec<u8>, number: u16, data: &[u8]) {
    let len = data.len().min(usize::from(u16::MAX));
    out.clear();
    out.extend_from_slice(&number.to_be_bytes());
    out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(data.get(..len).unwrap_or_default());
}
