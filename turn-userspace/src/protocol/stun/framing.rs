//! STUN and ChannelData on a byte stream (RFC 8656 §3.1, §12.5; RFC 8489 §6.2.2): where
//! one message ends and the next begins. Pure functions on bytes, shared by the daemon's
//! stream codec and any client.
//!
//! - A STUN message is its 20-byte header plus the length in it (always a multiple of 4,
//!   with the magic cookie; RFC 8489 §5–§6).
//! - ChannelData is its 4-byte header plus the length in it, padded to a multiple of 4:
//!   over TCP and TLS the padding is mandatory (RFC 8656 §12.5), so a frame includes it.
//! - Anything else cannot be framed: the first two bits say neither STUN (0b00) nor
//!   ChannelData (0b01), or a STUN header lacks the magic cookie or has a length that is
//!   not a multiple of 4. No resynchronisation is possible after that.

use super::channel_data::{self, is_channel_data};
use super::{padded_len, HEADER_LEN, MAGIC_COOKIE};

/// The longest frame the 16-bit length fields allow: a STUN message with 65532 bytes of
/// attributes (the largest multiple of 4) after its header. ChannelData tops out at
/// 4 + 65536 (65535 bytes padded).
pub const MAX_STREAM_FRAME: usize = HEADER_LEN + 65_532;

/// Why bytes on a stream cannot be cut into messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("first byte {0:#04x} starts neither a STUN message nor ChannelData")]
    NotTurn(u8),
    #[error("STUN header without the magic cookie")]
    NoMagicCookie,
    #[error("STUN message length {0} is not a multiple of 4")]
    UnalignedLength(usize),
}

/// The length of the frame `bytes` start with (ChannelData with its padding), once enough
/// of its header is there to tell (4 bytes for ChannelData, 8 for STUN); None before.
pub fn stream_frame_length(bytes: &[u8]) -> Result<Option<usize>, FramingError> {
    let Some(&first) = bytes.first() else {
        return Ok(None);
    };
    let Some(length) = bytes
        .get(2..4)
        .map(|field| usize::from(u16::from_be_bytes([field[0], field[1]])))
    else {
        return Ok(None);
    };
    if is_channel_data(bytes) {
        // Every 0b01 channel number is one a client may bind (0x4000–0x7FFF).
        return Ok(Some(channel_data::HEADER_LEN + padded_len(length)));
    }
    if first & 0xC0 != 0 {
        return Err(FramingError::NotTurn(first));
    }
    let Some(cookie) = bytes.get(4..8) else {
        return Ok(None);
    };
    if cookie != MAGIC_COOKIE.to_be_bytes() {
        return Err(FramingError::NoMagicCookie);
    }
    if length % 4 != 0 {
        return Err(FramingError::UnalignedLength(length));
    }
    Ok(Some(HEADER_LEN + length))
}

/// The zero bytes to send after `message` on a stream: ChannelData is padded to a
/// multiple of 4 there (RFC 8656 §12.5); a STUN message always is one already.
pub fn stream_padding(message: &[u8]) -> usize {
    if is_channel_data(message) {
        padded_len(message.len()) - message.len()
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_come_from_the_headers() {
        assert_eq!(stream_frame_length(&[]), Ok(None));
        assert_eq!(stream_frame_length(&[0x40, 0x00, 0x00]), Ok(None));
        assert_eq!(stream_frame_length(&[0x40, 0x00, 0x00, 0x05]), Ok(Some(12)));
        assert_eq!(
            stream_frame_length(&[0x7f, 0xff, 0xff, 0xff]),
            Ok(Some(65_540))
        );
        let header = [0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42];
        assert_eq!(stream_frame_length(&header[..7]), Ok(None));
        assert_eq!(stream_frame_length(&header), Ok(Some(28)));
    }

    #[test]
    fn what_cannot_be_framed_says_why() {
        assert_eq!(
            stream_frame_length(&[0x80, 0, 0, 0]),
            Err(FramingError::NotTurn(0x80))
        );
        assert_eq!(
            stream_frame_length(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01]),
            Err(FramingError::NoMagicCookie)
        );
        assert_eq!(
            stream_frame_length(&[0x00, 0x01, 0x00, 0x06, 0x21, 0x12, 0xa4, 0x42]),
            Err(FramingError::UnalignedLength(6))
        );
    }

    #[test]
    fn only_channel_data_is_padded() {
        assert_eq!(stream_padding(&[0x40, 0x00, 0x00, 0x01, 9]), 3);
        assert_eq!(stream_padding(&[0x40, 0x00, 0x00, 0x00]), 0);
        assert_eq!(stream_padding(&[0x00, 0x01, 0x00, 0x00]), 0);
    }
}
