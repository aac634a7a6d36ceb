//! The transports of the [`super::TurnClient`]: a UDP socket, or a TCP or TLS stream
//! framed as RFC 8656 §3.1 and §12.5 say.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use turn_relay::protocol::stun::channel_data;
use turn_relay::protocol::stun::framing::{stream_frame_length, stream_padding};

use super::{client_socket, receive_within, timed_out, transact, RECEIVE_BUFFER};
use crate::netns::Namespace;

/// How long a request over a stream waits for its response (there are no
/// retransmissions on reliable transports, RFC 8489 §6.2.2).
const STREAM_RESPONSE_LIMIT: Duration = Duration::from_secs(6);

/// A TCP connection, or TLS over one (what a stream [`Link`] holds).
pub enum Stream {
    Tcp(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Tcp(tcp) => tcp,
            Stream::Tls(tls) => &tls.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(tcp) => tcp.read(buffer),
            Stream::Tls(tls) => tls.read(buffer),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(tcp) => tcp.write(bytes),
            Stream::Tls(tls) => tls.write(bytes),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(tcp) => tcp.flush(),
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

/// How a client reaches the relay: a connected UDP socket, or a TCP or TLS connection
/// carrying framed messages.
pub enum Link {
    Udp(UdpSocket),
    Stream {
        stream: Stream,
        /// Bytes read but not yet framed.
        received: Vec<u8>,
    },
}

impl Link {
    /// A [`client_socket`] to `server` in `netns`.
    pub fn udp(netns: &Namespace, server: SocketAddr) -> Result<Link> {
        client_socket(netns, server).map(Link::Udp)
    }

    /// A TCP connection from `netns` (the client's address of `server`'s family) to
    /// `server`.
    pub fn tcp(netns: &Namespace, server: SocketAddr) -> Result<Link> {
        let tcp = connect(netns, server)?;
        Ok(Link::Stream {
            stream: Stream::Tcp(tcp),
            received: Vec::new(),
        })
    }

    /// A TCP connection from `local` (an address of `netns`, any port) to `server`.
    pub fn tcp_from(netns: &Namespace, local: IpAddr, server: SocketAddr) -> Result<Link> {
        let tcp = netns.run_inside(move || {
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(server),
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            socket
                .bind(&SocketAddr::new(local, 0).into())
                .with_context(|| format!("binding {local}"))?;
            socket
                .connect_timeout(&server.into(), STREAM_RESPONSE_LIMIT)
                .with_context(|| format!("connecting to {server} from {local}"))?;
            socket.set_nodelay(true)?;
            Ok(TcpStream::from(socket))
        })?;
        Ok(Link::Stream {
            stream: Stream::Tcp(tcp),
            received: Vec::new(),
        })
    }

    /// A TLS connection to `server`, verified by `config` against `server_name` (a host
    /// name, or the IP address as text); the handshake completes before this returns.
    pub fn tls(
        netns: &Namespace,
        server: SocketAddr,
        config: Arc<ClientConfig>,
        server_name: &str,
    ) -> Result<Link> {
        let name = ServerName::try_from(server_name.to_owned())
            .with_context(|| format!("{server_name:?} is not a server name"))?;
        let tcp = connect(netns, server)?;
        tcp.set_read_timeout(Some(STREAM_RESPONSE_LIMIT))?;
        let connection = ClientConnection::new(config, name).context("starting TLS")?;
        let mut tls = StreamOwned::new(connection, tcp);
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .with_context(|| format!("TLS handshake with {server}"))?;
        }
        Ok(Link::Stream {
            stream: Stream::Tls(Box::new(tls)),
            received: Vec::new(),
        })
    }

    /// The TLS protocol the server chose by ALPN (RFC 7443), if any.
    pub fn alpn(&self) -> Option<Vec<u8>> {
        match self {
            Link::Stream {
                stream: Stream::Tls(tls),
                ..
            } => tls.conn.alpn_protocol().map(<[u8]>::to_vec),
            _ => None,
        }
    }

    /// Bounds how long a write may block on a stream (a relay that stopped reading);
    /// nothing for UDP.
    pub fn set_write_timeout(&self, limit: Duration) -> Result<()> {
        if let Link::Stream { stream, .. } = self {
            stream.tcp().set_write_timeout(Some(limit))?;
        }
        Ok(())
    }

    /// The client's own address.
    pub fn local_address(&self) -> Result<SocketAddr> {
        match self {
            Link::Udp(socket) => socket.local_addr(),
            Link::Stream { stream, .. } => stream.tcp().local_addr(),
        }
        .context("the client's address")
    }

    /// Sends one message (ChannelData padded on a stream).
    pub fn send(&mut self, message: &[u8]) -> Result<()> {
        match self {
            Link::Udp(socket) => socket.send(message).map(drop).context("sending"),
            Link::Stream { stream, .. } => {
                let mut framed = message.to_vec();
                framed.resize(message.len() + stream_padding(message), 0);
                stream.write_all(&framed).context("writing")?;
                stream.flush().context("flushing")
            }
        }
    }

    /// Writes raw bytes on a stream, framed or not (hostile-client tests).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        match self {
            Link::Udp(socket) => socket.send(bytes).map(drop).context("sending"),
            Link::Stream { stream, .. } => {
                stream.write_all(bytes).context("writing")?;
                stream.flush().context("flushing")
            }
        }
    }

    /// The next message (datagram, or frame from the stream) within `limit`; None when
    /// nothing arrives. A stream the relay closed is an error.
    pub fn receive(&mut self, limit: Duration) -> Result<Option<Vec<u8>>> {
        match self {
            Link::Udp(socket) => {
                let mut buffer = [0u8; RECEIVE_BUFFER];
                Ok(receive_within(socket, &mut buffer, limit)?
                    .map(|len| buffer.get(..len).unwrap_or_default().to_vec()))
            }
            Link::Stream { stream, received } => {
                let deadline = Instant::now() + limit;
                loop {
                    if let Some(length) = stream_frame_length(received)
                        .map_err(|error| anyhow::anyhow!("the relay sent {error}"))?
                        .filter(|length| received.len() >= *length)
                    {
                        return Ok(Some(received.drain(..length).collect()));
                    }
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                        return Ok(None);
                    };
                    if left.is_zero() {
                        return Ok(None);
                    }
                    stream.tcp().set_read_timeout(Some(left))?;
                    let mut buffer = [0u8; 4096];
                    match stream.read(&mut buffer) {
                        Ok(0) => bail!("the relay closed the connection"),
                        Ok(length) => {
                            received.extend_from_slice(buffer.get(..length).unwrap_or_default())
                        }
                        Err(error) if timed_out(&error) => return Ok(None),
                        Err(error) => return Err(error).context("reading"),
                    }
                }
            }
        }
    }

    /// Whether the relay closed the connection within `limit` (end of stream or reset;
    /// anything it sends meanwhile is skipped).
    pub fn closed_within(&mut self, limit: Duration) -> Result<bool> {
        let Link::Stream { stream, .. } = self else {
            bail!("a UDP socket is never closed by the relay");
        };
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            stream.tcp().set_read_timeout(Some(left))?;
            let mut buffer = [0u8; 4096];
            match stream.read(&mut buffer) {
                Ok(0) => return Ok(true),
                Ok(_) => {}
                Err(error) if timed_out(&error) => {}
                Err(_) => return Ok(true),
            }
        }
        Ok(false)
    }

    /// Sends `request` and returns the response with its transaction id; over UDP with
    /// retransmissions ([`transact`]), over a stream once. Other messages meanwhile
    /// (relayed data) are skipped.
    pub fn transact(&mut self, request: &[u8]) -> Result<Vec<u8>> {
        if let Link::Udp(socket) = self {
            return transact(socket, request);
        }
        let transaction = request
            .get(8..20)
            .context("request shorter than a header")?
            .to_vec();
        self.send(request)?;
        let deadline = Instant::now() + STREAM_RESPONSE_LIMIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some(message) = self.receive(left)? else {
                break;
            };
            if !channel_data::is_channel_data(&message)
                && message.get(8..20) == Some(transaction.as_slice())
            {
                return Ok(message);
            }
        }
        bail!("no response within {STREAM_RESPONSE_LIMIT:?}")
    }
}

/// A TCP connection from the client's address of `server`'s family in `netns`.
fn connect(netns: &Namespace, server: SocketAddr) -> Result<TcpStream> {
    netns.run_inside(move || {
        let tcp = TcpStream::connect_timeout(&server, STREAM_RESPONSE_LIMIT)
            .with_context(|| format!("connecting to {server}"))?;
        tcp.set_nodelay(true)?;
        Ok(tcp)
    })
}

/// A UDP socket in `netns` connected to `server`, its source address chosen by the
/// namespace's routes (for topologies other than [`crate::topology`]'s).
pub fn routed_socket(netns: &Namespace, server: SocketAddr) -> Result<UdpSocket> {
    let any: SocketAddr = if server.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    netns.run_inside(move || {
        let socket = UdpSocket::bind(any).context("binding a client socket")?;
        socket
            .connect(server)
            .with_context(|| format!("connecting a client socket to {server}"))?;
        Ok(socket)
    })
}
