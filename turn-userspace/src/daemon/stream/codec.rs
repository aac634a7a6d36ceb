//! TURN over a byte stream as a `tokio-util` codec: the framing of
//! [`crate::protocol::stun::framing`] (RFC 8656 §3.1, §12.5) with the connection's limit
//! on a frame's length, and the padding written after ChannelData.
//!
//! A frame that cannot be cut out (neither STUN nor ChannelData, an impossible length, or
//! longer than the connection may buffer) leaves the stream unusable: the connection is
//! closed. A frame the decoder yields may still be a malformed STUN message: that is the
//! protocol core's business (400 or silence), not the framing's.

use bytes::{BufMut as _, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::protocol::stun::framing::{
    stream_frame_length, stream_padding, FramingError, MAX_STREAM_FRAME,
};

/// The longest frame the 16-bit length fields allow.
pub(crate) const MAX_FRAME: usize = MAX_STREAM_FRAME;
/// The smallest limit a connection may set: one full-sized Ethernet datagram framed as
/// ChannelData, with room to spare for a STUN request with long credentials.
pub(crate) const MIN_FRAME_LIMIT: usize = 1_500;

/// Why a stream cannot be framed. Every case closes the connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("reading the connection: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Framing(#[from] FramingError),
    #[error("a {length}-byte frame is longer than the {limit} bytes a connection may buffer")]
    TooLong { length: usize, limit: usize },
}

/// STUN messages and ChannelData on a byte stream, in both directions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamCodec {
    /// The longest frame accepted (≤ [`MAX_FRAME`]): a connection never buffers more than
    /// one frame of this size plus one read.
    max_frame: usize,
}

impl StreamCodec {
    /// A codec accepting frames of up to `max_frame` bytes (clamped to what the length
    /// fields allow).
    pub(crate) fn new(max_frame: usize) -> StreamCodec {
        StreamCodec {
            max_frame: max_frame.clamp(MIN_FRAME_LIMIT, MAX_FRAME),
        }
    }
}

impl Decoder for StreamCodec {
    /// One STUN message, or one ChannelData message with its padding (the protocol core
    /// accepts both padded and unpadded ChannelData).
    type Item = BytesMut;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        let Some(length) = stream_frame_length(src)? else {
            return Ok(None);
        };
        if length > self.max_frame {
            return Err(FrameError::TooLong {
                length,
                limit: self.max_frame,
            });
        }
        if src.len() < length {
            src.reserve(length - src.len());
            return Ok(None);
        }
        Ok(Some(src.split_to(length)))
    }
}

/// Writes one STUN message or ChannelData message as the protocol core built it, adding
/// the padding a stream needs after ChannelData.
impl Encoder<&[u8]> for StreamCodec {
    type Error = std::io::Error;

    fn encode(&mut self, message: &[u8], dst: &mut BytesMut) -> std::io::Result<()> {
        let padding = stream_padding(message);
        dst.reserve(message.len() + padding);
        dst.put_slice(message);
        dst.put_bytes(0, padding);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::stun::channel_data;
    use crate::protocol::stun::{Class, Message, MessageBuilder, Method, TransactionId};

    fn binding_request(id: u8) -> Vec<u8> {
        let mut message = Vec::new();
        MessageBuilder::new(
            &mut message,
            Method::BINDING,
            Class::Request,
            &TransactionId([id; 12]),
        )
        .attribute(0x8022, b"software!");
        message
    }

    fn channel_data(number: u16, data: &[u8]) -> Vec<u8> {
        let mut message = Vec::new();
        channel_data::encode(&mut message, number, data);
        message
    }

    /// `message` as a stream carries it.
    fn framed(message: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        StreamCodec::new(MAX_FRAME)
            .encode(message, &mut out)
            .expect("encoding never fails");
        out.to_vec()
    }

    /// Every frame `bytes` holds, decoding as data arrives `chunk` bytes at a time.
    fn decode_in_chunks(bytes: &[u8], chunk: usize) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut codec = StreamCodec::new(MAX_FRAME);
        let mut buffer = BytesMut::new();
        let mut frames = Vec::new();
        for piece in bytes.chunks(chunk.max(1)) {
            buffer.extend_from_slice(piece);
            while let Some(frame) = codec.decode(&mut buffer)? {
                frames.push(frame.to_vec());
            }
        }
        assert!(buffer.is_empty(), "{} bytes left undecoded", buffer.len());
        Ok(frames)
    }

    #[test]
    fn channel_data_is_padded_on_the_stream() {
        for (length, padding) in [(0, 0), (1, 3), (2, 2), (3, 1), (4, 0), (5, 3)] {
            let message = channel_data(0x4001, &vec![7; length]);
            let on_stream = framed(&message);
            assert_eq!(on_stream.len(), 4 + length + padding, "{length}");
            assert_eq!(&on_stream[..message.len()], message.as_slice());
            assert!(on_stream[message.len()..].iter().all(|&byte| byte == 0));
        }
        let stun = binding_request(1);
        assert_eq!(framed(&stun), stun, "STUN is padded already");
    }

    #[test]
    fn pipelined_frames_come_out_one_by_one_whatever_the_chunking() {
        let messages = [
            binding_request(1),
            channel_data(0x4001, b"odd"),
            channel_data(0x7fff, &[9; 1000]),
            channel_data(0x4002, b""),
            binding_request(2),
            channel_data(0x4003, b"four"),
        ];
        let stream: Vec<u8> = messages.iter().flat_map(|m| framed(m)).collect();
        for chunk in [1, 2, 3, 5, 19, 20, 21, 64, 1001, stream.len()] {
            let frames = decode_in_chunks(&stream, chunk).expect("well framed");
            assert_eq!(frames.len(), messages.len(), "chunks of {chunk}");
            for (frame, message) in frames.iter().zip(&messages) {
                assert_eq!(frame, &framed(message), "chunks of {chunk}");
            }
        }
        // What the core makes of the frames: padded ChannelData parses to its data.
        let frames = decode_in_chunks(&stream, 7).expect("well framed");
        let data = channel_data::ChannelData::parse(&frames[1]).expect("ChannelData");
        assert_eq!(data.data, b"odd");
        let binding = Message::parse(&frames[4]).expect("STUN");
        assert_eq!(binding.transaction_id(), &TransactionId([2; 12]));
    }

    #[test]
    fn a_partial_frame_waits_for_the_rest() {
        let mut codec = StreamCodec::new(MAX_FRAME);
        let message = framed(&channel_data(0x4000, &[1; 301]));
        let mut buffer = BytesMut::from(&message[..3]);
        assert!(codec.decode(&mut buffer).expect("fine").is_none());
        buffer.extend_from_slice(&message[3..message.len() - 1]);
        assert!(codec.decode(&mut buffer).expect("fine").is_none());
        assert!(
            buffer.capacity() >= message.len(),
            "room for the whole frame is reserved"
        );
        buffer.extend_from_slice(&message[message.len() - 1..]);
        assert_eq!(
            codec.decode(&mut buffer).expect("fine").as_deref(),
            Some(message.as_slice())
        );
        // A STUN header cut before its magic cookie is not judged yet.
        let mut buffer = BytesMut::from(&binding_request(3)[..6]);
        assert!(codec.decode(&mut buffer).expect("fine").is_none());
    }

    #[test]
    fn what_cannot_be_framed_is_an_error() {
        let error = |bytes: &[u8], limit: usize| {
            StreamCodec::new(limit)
                .decode(&mut BytesMut::from(bytes))
                .map(|frame| frame.map(|f| f.to_vec()))
                .expect_err("unframeable")
                .to_string()
        };
        // Neither STUN nor ChannelData: 0b10 and 0b11 (RFC 7983's DTLS/RTP ranges too).
        assert!(error(&[0x80, 0, 0, 0], MAX_FRAME).contains("0x80"));
        assert!(error(b"\xc0\x01\x02\x03", MAX_FRAME).contains("neither"));
        // A TLS ClientHello on the plain TCP port: 0x16 0x03 0x01 ... is not STUN.
        assert!(
            error(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01], MAX_FRAME)
                .contains("magic cookie")
        );
        let mut no_cookie = binding_request(4);
        no_cookie[4] ^= 0xff;
        assert!(error(&no_cookie, MAX_FRAME).contains("magic cookie"));
        // Impossible lengths: unaligned STUN, and frames beyond the limit.
        let mut unaligned = binding_request(5);
        unaligned[3] |= 1;
        assert!(error(&unaligned, MAX_FRAME).contains("multiple of 4"));
        assert!(error(&[0x40, 0x00, 0xff, 0xff], 4096).contains("65540-byte frame"));
        let mut huge_stun = binding_request(6);
        huge_stun[2..4].copy_from_slice(&0xfffc_u16.to_be_bytes());
        assert!(error(&huge_stun, 4096).contains("longer than the 4096 bytes"));
        // The full default limit takes the largest frames the length fields allow.
        let mut codec = StreamCodec::new(MAX_FRAME);
        let mut largest = BytesMut::from(&huge_stun[..]);
        largest.resize(MAX_FRAME, 0);
        assert_eq!(
            codec.decode(&mut largest).expect("fine").map(|f| f.len()),
            Some(MAX_FRAME)
        );
        let mut largest_channel_data =
            BytesMut::from(&framed(&channel_data(0x4000, &[0; 65_535]))[..]);
        assert_eq!(
            codec
                .decode(&mut largest_channel_data)
                .expect("fine")
                .map(|f| f.len()),
            Some(65_540)
        );
    }

    #[test]
    fn limits_are_clamped_to_what_framing_allows() {
        assert_eq!(StreamCodec::new(0).max_frame, MIN_FRAME_LIMIT);
        assert_eq!(StreamCodec::new(usize::MAX).max_frame, MAX_FRAME);
    }
}
