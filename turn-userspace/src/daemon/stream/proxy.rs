//! The PROXY protocol (HAProxy's v1 text and v2 binary headers, parsed by the `ppp`
//! crate): a load balancer in front of the relay announces the client's real address
//! before the client's own bytes. It is taken only on listeners that expect it and only
//! from the networks in `proxy_protocol.allow_from`; elsewhere a PROXY header is refused
//! (a client cannot choose the address the relay believes it has).

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf as _, BytesMut};
use ppp::{v1, v2, HeaderResult, PartialResult as _};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};

/// The longest PROXY header read: a v1 line is at most 107 bytes; v2 headers carry TLVs
/// (TLS details, cloud endpoint ids) of a few hundred bytes in practice.
pub(super) const MAX_HEADER: usize = 4096;
/// The v1 header's start.
const V1_SIGNATURE: &[u8] = b"PROXY ";

/// Why a connection's PROXY header was not taken.
#[derive(Debug, thiserror::Error)]
pub(super) enum ProxyError {
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    #[error("the connection closed before its PROXY header was complete")]
    Closed,
    #[error("invalid PROXY header: {0}")]
    Invalid(String),
    #[error("PROXY header longer than {MAX_HEADER} bytes")]
    TooLong,
}

/// Whether `bytes` (the first bytes of a connection) start like a PROXY header, v1 or v2.
/// A shorter prefix of a signature counts: the rest may be on its way.
pub(super) fn looks_like_proxy_header(bytes: &[u8]) -> bool {
    let starts = |signature: &[u8]| {
        let common = bytes.len().min(signature.len());
        common > 0 && bytes.get(..common) == signature.get(..common)
    };
    starts(V1_SIGNATURE) || starts(v2::PROTOCOL_PREFIX)
}

/// Reads a PROXY header from `stream` and returns the client address it announces (None
/// for v1 UNKNOWN, v2 LOCAL — a balancer's own health check — and non-IP families: the
/// connection's own address stands) and the bytes read after the header.
pub(super) async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(Option<SocketAddr>, BytesMut), ProxyError> {
    let mut buffer = BytesMut::with_capacity(256);
    loop {
        if stream.read_buf(&mut buffer).await? == 0 {
            return Err(ProxyError::Closed);
        }
        if let Some((source, length)) = parse_header(&buffer)? {
            buffer.advance(length);
            return Ok((source, buffer));
        }
        if buffer.len() >= MAX_HEADER {
            return Err(ProxyError::TooLong);
        }
    }
}

/// The announced source and the header's length, once `bytes` hold a whole header.
fn parse_header(bytes: &[u8]) -> Result<Option<(Option<SocketAddr>, usize)>, ProxyError> {
    if !looks_like_proxy_header(bytes) {
        return Err(ProxyError::Invalid("no PROXY signature".to_owned()));
    }
    let header = HeaderResult::parse(bytes);
    if header.is_incomplete() {
        return Ok(None);
    }
    match header {
        HeaderResult::V1(Ok(header)) => {
            let source = match header.addresses {
                v1::Addresses::Tcp4(addresses) => Some(SocketAddr::from((
                    addresses.source_address,
                    addresses.source_port,
                ))),
                v1::Addresses::Tcp6(addresses) => Some(SocketAddr::from((
                    addresses.source_address,
                    addresses.source_port,
                ))),
                v1::Addresses::Unknown => None,
            };
            Ok(Some((source, header.header.len())))
        }
        HeaderResult::V2(Ok(header)) => {
            let source =
                match (header.command, header.addresses) {
                    (v2::Command::Proxy, v2::Addresses::IPv4(addresses)) => Some(SocketAddr::from(
                        (addresses.source_address, addresses.source_port),
                    )),
                    (v2::Command::Proxy, v2::Addresses::IPv6(addresses)) => Some(SocketAddr::from(
                        (addresses.source_address, addresses.source_port),
                    )),
                    _ => None,
                };
            Ok(Some((source, header.len())))
        }
        HeaderResult::V1(Err(error)) => Err(ProxyError::Invalid(error.to_string())),
        HeaderResult::V2(Err(error)) => Err(ProxyError::Invalid(error.to_string())),
    }
}

/// A stream whose first bytes were read already (while looking for a PROXY header): reads
/// return them first, then the stream's own. Writes go straight to the stream. This is
/// what the TLS handshake runs on when a client's first bytes followed the header.
#[derive(Debug)]
pub(super) struct Rewind<S> {
    prefix: BytesMut,
    inner: S,
}

impl<S> Rewind<S> {
    pub(super) fn new(prefix: BytesMut, inner: S) -> Rewind<S> {
        Rewind { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let length = self.prefix.len().min(buf.remaining());
            buf.put_slice(self.prefix.get(..length).unwrap_or_default());
            self.prefix.advance(length);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use tokio::io::{AsyncWriteExt as _, DuplexStream};

    use super::*;

    fn v2_header(command: v2::Command, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
        v2::Builder::with_addresses(
            v2::Version::Two | command,
            v2::Protocol::Stream,
            (source, destination),
        )
        .write_tlv(v2::Type::NoOp, b"padding")
        .and_then(v2::Builder::build)
        .expect("a valid header")
    }

    /// Runs `read_header` on a connection that delivers `chunks` one write at a time.
    fn read_from(chunks: Vec<Vec<u8>>) -> Result<(Option<SocketAddr>, Vec<u8>), ProxyError> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(async move {
                let (mut client, mut server): (DuplexStream, DuplexStream) =
                    tokio::io::duplex(8192);
                let writer = async move {
                    for chunk in chunks {
                        client.write_all(&chunk).await.expect("write");
                        tokio::task::yield_now().await;
                    }
                };
                let (result, ()) = tokio::join!(read_header(&mut server), writer);
                result.map(|(source, rest)| (source, rest.to_vec()))
            })
    }

    #[test]
    fn v1_and_v2_headers_announce_the_client() {
        let client = SocketAddr::from((Ipv4Addr::new(198, 18, 7, 7), 40_000));
        let balancer = SocketAddr::from((Ipv4Addr::new(198, 18, 1, 1), 3478));
        let mut v1 = b"PROXY TCP4 198.18.7.7 198.18.1.1 40000 3478\r\n".to_vec();
        v1.extend_from_slice(b"STUN bytes");
        assert_eq!(
            read_from(vec![v1]).expect("v1"),
            (Some(client), b"STUN bytes".to_vec())
        );
        let v6_client = SocketAddr::from((Ipv6Addr::new(0x2001, 2, 0, 7, 0, 0, 0, 7), 41_000));
        let v6_balancer = SocketAddr::from((Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 1), 5349));
        let mut v2 = v2_header(v2::Command::Proxy, v6_client, v6_balancer);
        v2.extend_from_slice(&[0x16, 0x03, 0x01]);
        // Split anywhere: the header may arrive in pieces.
        let (first, second) = v2.split_at(7);
        assert_eq!(
            read_from(vec![first.to_vec(), second.to_vec()]).expect("v2"),
            (Some(v6_client), vec![0x16, 0x03, 0x01])
        );
        // A balancer's health check (LOCAL) and v1 UNKNOWN keep the connection's address.
        let local = v2_header(v2::Command::Local, client, balancer);
        assert_eq!(read_from(vec![local]).expect("local"), (None, Vec::new()));
        assert_eq!(
            read_from(vec![b"PROXY UNKNOWN\r\n".to_vec()]).expect("unknown"),
            (None, Vec::new())
        );
    }

    #[test]
    fn anything_else_is_refused() {
        let error = |chunks: Vec<Vec<u8>>| read_from(chunks).expect_err("refused").to_string();
        // A client that sends STUN right away on a PROXY listener.
        assert!(error(vec![vec![0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42]]).contains("signature"));
        assert!(
            error(vec![b"PROXY TCP4 not-an-ip 198.18.1.1 1 2\r\n".to_vec()])
                .contains("invalid PROXY header")
        );
        assert!(error(vec![b"PROXY TCP4 198.18.7.7".to_vec()]).contains("closed before"));
        let mut endless = b"PROXY TCP4 ".to_vec();
        endless.resize(MAX_HEADER + 10, b'1');
        assert!(error(vec![endless]).contains("invalid PROXY header"));
        assert!(error(vec![]).contains("closed before"));
        let mut huge_v2 = v2::PROTOCOL_PREFIX.to_vec();
        huge_v2.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        huge_v2.resize(MAX_HEADER + 16, 0);
        assert!(error(vec![huge_v2]).contains("longer than"));
    }

    #[test]
    fn signatures_are_recognised_from_their_first_byte() {
        assert!(looks_like_proxy_header(b"PRO"));
        assert!(looks_like_proxy_header(b"PROXY TCP4"));
        assert!(looks_like_proxy_header(&v2::PROTOCOL_PREFIX[..3]));
        assert!(!looks_like_proxy_header(b""));
        assert!(!looks_like_proxy_header(b"PUT"));
        assert!(!looks_like_proxy_header(&[0x00, 0x01]));
    }

    #[test]
    fn rewind_replays_its_prefix_then_reads_the_stream() {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(async {
                let (mut client, server) = tokio::io::duplex(64);
                client.write_all(b" world").await.expect("write");
                drop(client);
                let mut rewound = Rewind::new(BytesMut::from(&b"hello"[..]), server);
                let mut all = Vec::new();
                rewound.read_to_end(&mut all).await.expect("read");
                assert_eq!(all, b"hello world");
            });
    }
}
