//! A small TCP proxy that announces each client to its upstream with a PROXY protocol v2
//! header (as HAProxy's `send-proxy-v2` does), for the tests of the relay behind a load
//! balancer. Bounded: it stops accepting when dropped or after [`LIFETIME`].

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ppp::v2;

use crate::netns::Namespace;

/// The longest a proxy runs.
const LIFETIME: Duration = Duration::from_secs(120);
/// How often the accept loop looks at its stop flag.
const POLL: Duration = Duration::from_millis(10);

/// The PROXY v2 header announcing a TCP connection from `client` to `proxy`.
pub fn v2_header(client: SocketAddr, proxy: SocketAddr) -> Result<Vec<u8>> {
    v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Proxy,
        v2::Protocol::Stream,
        (client, proxy),
    )
    .build()
    .context("building a PROXY v2 header")
}

/// A running proxy; stops accepting when dropped (connections in flight end with their
/// ends).
pub struct ProxyV2 {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl ProxyV2 {
    /// Listens on `listen` inside `netns` and forwards every connection to `upstream`,
    /// starting it with the PROXY v2 header that names the client.
    pub fn start(netns: &Namespace, listen: SocketAddr, upstream: SocketAddr) -> Result<ProxyV2> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let address = netns.run_inside(move || {
            let listener = TcpListener::bind(listen)
                .with_context(|| format!("binding the proxy on {listen}"))?;
            listener.set_nonblocking(true)?;
            let address = listener.local_addr()?;
            // A thread started here stays in the namespace: its upstream connections
            // leave from the namespace's addresses.
            thread::spawn(move || accept_loop(&listener, address, upstream, &flag));
            Ok(address)
        })?;
        Ok(ProxyV2 { address, stop })
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for ProxyV2 {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn accept_loop(listener: &TcpListener, proxy: SocketAddr, upstream: SocketAddr, stop: &AtomicBool) {
    let deadline = Instant::now() + LIFETIME;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        match listener.accept() {
            Ok((client, client_address)) => {
                if let Err(error) = forward(client, client_address, proxy, upstream) {
                    eprintln!("PROXY test proxy: {error:#}");
                }
            }
            Err(_) => thread::sleep(POLL),
        }
    }
}

/// Connects to `upstream`, sends the header and copies both ways on two threads.
fn forward(
    client: TcpStream,
    client_address: SocketAddr,
    proxy: SocketAddr,
    upstream: SocketAddr,
) -> Result<()> {
    client.set_nonblocking(false)?;
    let mut server = TcpStream::connect_timeout(&upstream, Duration::from_secs(5))
        .with_context(|| format!("connecting to {upstream}"))?;
    server.set_nodelay(true)?;
    client.set_nodelay(true)?;
    server.write_all(&v2_header(client_address, proxy)?)?;
    let (client_reader, server_writer) = (client.try_clone()?, server.try_clone()?);
    thread::spawn(move || copy(client_reader, server_writer));
    thread::spawn(move || copy(server, client));
    Ok(())
}

/// Copies until either end closes, then closes the other's write side.
fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(length) => {
                if to
                    .write_all(buffer.get(..length).unwrap_or_default())
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
