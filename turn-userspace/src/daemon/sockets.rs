//! UDP sockets driven through one epoll instance, read and written in batches with
//! recvmmsg/sendmmsg. No heap allocation per packet: the batch buffers are allocated once
//! and reused.
//!
//! The epoll instance is itself registered with tokio (through `AsyncFd`), so the single
//! daemon task sleeps until any listener or relay socket has data, then asks epoll
//! (level-triggered, without blocking) which ones.

use std::collections::HashMap;
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd as _, OwnedFd, RawFd};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Datagrams read or written per system call.
pub(crate) const BATCH: usize = 32;
/// Room for the largest UDP payload (65535 - 8 byte UDP header - 20 byte IPv4 header).
pub(crate) const MAX_DATAGRAM: usize = 65_507;
/// Kernel socket buffer size asked for on listeners: bursts of many clients queue here.
const LISTENER_BUFFER_BYTES: usize = 4 << 20;
/// Epoll readiness events fetched per call.
const EVENTS: usize = 64;

/// What a socket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SocketRole {
    /// A STUN/TURN listening socket (clients send here).
    Listener,
    /// A relay socket of one allocation (peers send here).
    Relay,
}

/// An epoll instance (level-triggered, read interest only).
#[derive(Debug)]
pub(crate) struct Epoll {
    fd: OwnedFd,
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Epoll {
    pub(crate) fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 has no memory-safety preconditions.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        Ok(Epoll {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// A duplicate of the epoll fd (same instance), for registering with tokio.
    pub(crate) fn duplicate_fd(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }

    fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `event` is a valid epoll_event for the duration of the call.
        let result =
            unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if result < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn delete(&self, fd: RawFd) {
        // SAFETY: a null event is allowed for EPOLL_CTL_DEL since Linux 2.6.9. Failure
        // means the fd was not registered, and closing it unregisters it anyway.
        unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        };
    }
}

/// Ready tokens from one non-blocking `epoll_wait`.
pub(crate) struct ReadyTokens {
    events: [libc::epoll_event; EVENTS],
    count: usize,
}

impl ReadyTokens {
    pub(crate) fn new() -> Self {
        ReadyTokens {
            events: [libc::epoll_event { events: 0, u64: 0 }; EVENTS],
            count: 0,
        }
    }

    /// Fills in the sockets that are readable now; returns how many.
    pub(crate) fn poll(&mut self, epoll: &Epoll) -> io::Result<usize> {
        // SAFETY: the buffer holds EVENTS events; timeout 0 never blocks.
        let count = unsafe {
            libc::epoll_wait(
                epoll.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                EVENTS as libc::c_int,
                0,
            )
        };
        if count < 0 {
            let error = io::Error::last_os_error();
            self.count = 0;
            return if error.kind() == io::ErrorKind::Interrupted {
                Ok(0)
            } else {
                Err(error)
            };
        }
        self.count = usize::try_from(count).unwrap_or(0).min(EVENTS);
        Ok(self.count)
    }

    pub(crate) fn tokens(&self) -> impl Iterator<Item = u64> + '_ {
        self.events.iter().take(self.count).map(|event| event.u64)
    }
}

/// One open socket.
#[derive(Debug)]
pub(crate) struct OpenSocket {
    pub(crate) socket: UdpSocket,
    pub(crate) local: SocketAddr,
    pub(crate) role: SocketRole,
}

/// Every open socket, by epoll token (a slot index) and by local address.
#[derive(Debug)]
pub(crate) struct SocketTable {
    epoll: Epoll,
    slots: Vec<Option<OpenSocket>>,
    free: Vec<usize>,
    by_address: HashMap<SocketAddr, usize>,
    relay_count: usize,
}

impl SocketTable {
    pub(crate) fn new(epoll: Epoll) -> Self {
        SocketTable {
            epoll,
            slots: Vec::new(),
            free: Vec::new(),
            by_address: HashMap::new(),
            relay_count: 0,
        }
    }

    pub(crate) fn epoll(&self) -> &Epoll {
        &self.epoll
    }

    /// Binds a non-blocking UDP socket at `local` and starts watching it.
    pub(crate) fn bind(&mut self, local: SocketAddr, role: SocketRole) -> io::Result<()> {
        let socket = Socket::new(
            Domain::for_address(local),
            Type::DGRAM.nonblocking().cloexec(),
            Some(Protocol::UDP),
        )?;
        if local.is_ipv6() {
            // IPv4 clients reach the IPv4 listener, never an IPv6 one as ::ffff:a.b.c.d.
            socket.set_only_v6(true)?;
        }
        if role == SocketRole::Listener {
            // Best effort: the kernel caps it at net.core.rmem_max.
            let _ = socket.set_recv_buffer_size(LISTENER_BUFFER_BYTES);
            let _ = socket.set_send_buffer_size(LISTENER_BUFFER_BYTES);
        }
        socket.bind(&SockAddr::from(local))?;
        let socket: UdpSocket = socket.into();
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        if let Err(error) = self.epoll.add(socket.as_raw_fd(), slot as u64) {
            self.free.push(slot);
            return Err(error);
        }
        if let Some(entry) = self.slots.get_mut(slot) {
            *entry = Some(OpenSocket {
                socket,
                local,
                role,
            });
        }
        self.by_address.insert(local, slot);
        if role == SocketRole::Relay {
            self.relay_count += 1;
        }
        Ok(())
    }

    /// Stops watching and closes the socket bound at `local`.
    pub(crate) fn close(&mut self, local: SocketAddr) {
        let Some(slot) = self.by_address.remove(&local) else {
            return;
        };
        if let Some(open) = self.slots.get_mut(slot).and_then(Option::take) {
            self.epoll.delete(open.socket.as_raw_fd());
            if open.role == SocketRole::Relay {
                self.relay_count -= 1;
            }
            self.free.push(slot);
        }
    }

    pub(crate) fn by_token(&self, token: u64) -> Option<&OpenSocket> {
        usize::try_from(token)
            .ok()
            .and_then(|slot| self.slots.get(slot))
            .and_then(Option::as_ref)
    }

    pub(crate) fn by_address(&self, local: SocketAddr) -> Option<&OpenSocket> {
        self.by_address
            .get(&local)
            .and_then(|slot| self.slots.get(*slot))
            .and_then(Option::as_ref)
    }

    pub(crate) fn relay_count(&self) -> usize {
        self.relay_count
    }
}

/// Buffers for one recvmmsg: BATCH datagrams of up to MAX_DATAGRAM bytes.
pub(crate) struct RecvBatch {
    buffers: Box<[[u8; MAX_DATAGRAM]]>,
    sources: [Option<SocketAddr>; BATCH],
    lengths: [usize; BATCH],
    count: usize,
}

impl RecvBatch {
    pub(crate) fn new() -> Self {
        RecvBatch {
            buffers: vec![[0u8; MAX_DATAGRAM]; BATCH].into_boxed_slice(),
            sources: [None; BATCH],
            lengths: [0; BATCH],
            count: 0,
        }
    }

    /// Reads up to BATCH datagrams without blocking. Ok(0) when none are queued.
    pub(crate) fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.count = 0;
        let mut names: [MaybeUninit<libc::sockaddr_storage>; BATCH] =
            [MaybeUninit::uninit(); BATCH];
        // SAFETY: iovec and mmsghdr are plain C structs for which all-zero is valid.
        let mut iovecs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for ((buffer, iovec), (header, name)) in self
            .buffers
            .iter_mut()
            .zip(iovecs.iter_mut())
            .zip(headers.iter_mut().zip(names.iter_mut()))
        {
            iovec.iov_base = buffer.as_mut_ptr().cast();
            iovec.iov_len = buffer.len();
            header.msg_hdr.msg_name = name.as_mut_ptr().cast();
            header.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_hdr.msg_iov = iovec;
            header.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at a live buffer and name slot owned by this frame or
        // by `self.buffers`, each with the length given.
        let received = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if received < 0 {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(error),
            };
        }
        let received = usize::try_from(received).unwrap_or(0).min(BATCH);
        for index in 0..received {
            let header = &headers[index].msg_hdr;
            let truncated = header.msg_flags & libc::MSG_TRUNC != 0;
            // SAFETY: the kernel wrote `msg_namelen` bytes of a socket address into the slot.
            let source = unsafe {
                let storage = names[index].assume_init_read();
                SockAddr::new(storage, header.msg_namelen).as_socket()
            };
            self.sources[index] = if truncated { None } else { source };
            self.lengths[index] = usize::try_from(headers[index].msg_len)
                .unwrap_or(0)
                .min(MAX_DATAGRAM);
        }
        self.count = received;
        Ok(received)
    }

    /// Datagram `index` of the last batch: its source and bytes. None for a truncated
    /// datagram or one from a non-IP source.
    pub(crate) fn datagram(&self, index: usize) -> Option<(SocketAddr, &[u8])> {
        if index >= self.count {
            return None;
        }
        let source = self.sources.get(index).copied().flatten()?;
        let length = *self.lengths.get(index)?;
        Some((source, self.buffers.get(index)?.get(..length)?))
    }
}

/// One datagram to send: the local socket's fd, the destination and the bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outgoing<'a> {
    pub(crate) fd: RawFd,
    pub(crate) to: SocketAddr,
    pub(crate) payload: &'a [u8],
}

/// Sends `datagrams` with as few sendmmsg calls as possible (one per run of datagrams
/// leaving the same socket). Returns how many could not be sent; UDP delivery is best
/// effort, so those are dropped like a full queue would drop them.
pub(crate) fn send_batch(datagrams: &[Outgoing<'_>]) -> usize {
    let mut dropped = 0;
    let mut start = 0;
    while let Some(first) = datagrams.get(start) {
        let run = datagrams
            .get(start..)
            .unwrap_or_default()
            .iter()
            .take(BATCH)
            .take_while(|datagram| datagram.fd == first.fd)
            .count();
        let chunk = datagrams.get(start..start + run).unwrap_or_default();
        let sent = send_run(first.fd, chunk);
        dropped += run - sent;
        start += run;
    }
    dropped
}

/// sendmmsg of at most BATCH datagrams from one socket; returns how many were sent.
fn send_run(fd: RawFd, datagrams: &[Outgoing<'_>]) -> usize {
    let mut addresses: [MaybeUninit<SockAddr>; BATCH] = [const { MaybeUninit::uninit() }; BATCH];
    // SAFETY: iovec and mmsghdr are plain C structs for which all-zero is valid.
    let mut iovecs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    let count = datagrams.len().min(BATCH);
    for (index, datagram) in datagrams.iter().take(count).enumerate() {
        let address = addresses[index].write(SockAddr::from(datagram.to));
        iovecs[index].iov_base = datagram.payload.as_ptr().cast_mut().cast();
        iovecs[index].iov_len = datagram.payload.len();
        let header = &mut headers[index].msg_hdr;
        header.msg_name = address.as_ptr().cast_mut().cast();
        header.msg_namelen = address.len();
        header.msg_iov = &mut iovecs[index];
        header.msg_iovlen = 1;
    }
    let mut next = 0;
    let mut sent = 0;
    while next < count {
        // SAFETY: headers[next..count] point at initialised addresses and at payloads
        // borrowed for the duration of this call; the kernel only reads them.
        let result = unsafe {
            libc::sendmmsg(
                fd,
                headers.as_mut_ptr().add(next),
                (count - next) as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        match usize::try_from(result) {
            Ok(0) => break,
            Ok(n) => {
                sent += n;
                next += n;
            }
            Err(_) => {
                let error = io::Error::last_os_error();
                match error.kind() {
                    io::ErrorKind::Interrupted => {}
                    io::ErrorKind::WouldBlock => break,
                    _ => {
                        // The kernel refused the datagram at `next` (e.g. no route to its
                        // destination): drop it and go on with the rest of the run.
                        if let Some(datagram) = datagrams.get(next) {
                            tracing::trace!(%error, to = %datagram.to, "dropping a datagram");
                        }
                        next += 1;
                    }
                }
            }
        }
    }
    sent
}

/// Sends one datagram (control responses); false when it could not be sent.
pub(crate) fn send_one(socket: &UdpSocket, to: SocketAddr, payload: &[u8]) -> bool {
    match socket.send_to(payload, to) {
        Ok(_) => true,
        Err(error) => {
            tracing::debug!(%error, %to, "sending a response failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback_socket() -> UdpSocket {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
        socket.set_nonblocking(true).expect("nonblocking");
        socket
    }

    #[test]
    fn batches_round_trip_over_loopback() {
        let sender = loopback_socket();
        let receiver = loopback_socket();
        let to = receiver.local_addr().expect("addr");
        let payloads: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; usize::from(i) + 1]).collect();
        let outgoing: Vec<Outgoing<'_>> = payloads
            .iter()
            .map(|p| Outgoing {
                fd: sender.as_raw_fd(),
                to,
                payload: p,
            })
            .collect();
        assert_eq!(send_batch(&outgoing), 0);

        let mut batch = RecvBatch::new();
        let mut seen = Vec::new();
        for _ in 0..100 {
            let count = batch.receive(&receiver).expect("recvmmsg");
            for index in 0..count {
                let (source, bytes) = batch.datagram(index).expect("datagram");
                assert_eq!(source, sender.local_addr().expect("addr"));
                seen.push(bytes.to_vec());
            }
            if seen.len() == payloads.len() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(seen, payloads);
        assert_eq!(
            batch
                .receive(&receiver)
                .expect("empty queue is not an error"),
            0
        );
    }

    #[test]
    fn socket_table_tracks_binds_and_closes() {
        let mut table = SocketTable::new(Epoll::new().expect("epoll"));
        let probe = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let address = probe.local_addr().expect("addr");
        drop(probe);
        table.bind(address, SocketRole::Relay).expect("bind relay");
        assert_eq!(table.relay_count(), 1);
        assert!(
            table.bind(address, SocketRole::Relay).is_err(),
            "port is taken"
        );
        assert_eq!(
            table.by_address(address).map(|s| s.role),
            Some(SocketRole::Relay)
        );

        let client = loopback_socket();
        client.send_to(b"ping", address).expect("send");
        let mut ready = ReadyTokens::new();
        let mut tokens = Vec::new();
        for _ in 0..100 {
            ready.poll(table.epoll()).expect("epoll_wait");
            tokens = ready.tokens().collect();
            if !tokens.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(tokens.len(), 1);
        assert_eq!(table.by_token(tokens[0]).map(|s| s.local), Some(address));

        table.close(address);
        assert_eq!(table.relay_count(), 0);
        assert!(table.by_address(address).is_none());
        table
            .bind(address, SocketRole::Relay)
            .expect("port is free again after close");
    }
}
