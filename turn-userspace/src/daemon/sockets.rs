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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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

    /// Watches `fd` for readability; its events carry `token`.
    pub(crate) fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
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

/// A non-blocking eventfd: one thread wakes another's epoll loop with [`wake`].
pub(crate) fn event_fd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd has no memory-safety preconditions.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes the eventfd readable (best effort: a full counter is readable already).
pub(crate) fn wake(event: &OwnedFd) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from a live buffer to an fd we own.
    unsafe { libc::write(event.as_raw_fd(), one.as_ptr().cast(), one.len()) };
}

/// Resets the eventfd (it stays readable until read).
pub(crate) fn clear_wake(event: &OwnedFd) {
    let mut count = [0u8; 8];
    // SAFETY: reads at most 8 bytes into a live buffer from an fd we own.
    unsafe { libc::read(event.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
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
    pub(crate) socket: Arc<UdpSocket>,
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
}

impl SocketTable {
    pub(crate) fn new(epoll: Epoll) -> Self {
        SocketTable {
            epoll,
            slots: Vec::new(),
            free: Vec::new(),
            by_address: HashMap::new(),
        }
    }

    pub(crate) fn epoll(&self) -> &Epoll {
        &self.epoll
    }

    /// Binds a non-blocking UDP socket at `local` and starts watching it.
    pub(crate) fn bind(
        &mut self,
        local: SocketAddr,
        role: SocketRole,
    ) -> io::Result<Arc<UdpSocket>> {
        let socket = Arc::new(bind_udp(local, role, false)?);
        self.adopt(Arc::clone(&socket), local, role)?;
        Ok(socket)
    }

    /// Starts watching `socket`, a non-blocking UDP socket bound at `local`.
    pub(crate) fn adopt(
        &mut self,
        socket: Arc<UdpSocket>,
        local: SocketAddr,
        role: SocketRole,
    ) -> io::Result<()> {
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
        Ok(())
    }

    /// Stops watching and closes the socket bound at `local`.
    pub(crate) fn close(&mut self, local: SocketAddr) {
        let Some(slot) = self.by_address.remove(&local) else {
            return;
        };
        if let Some(open) = self.slots.get_mut(slot).and_then(Option::take) {
            self.epoll.delete(open.socket.as_raw_fd());
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
}

/// A non-blocking UDP socket bound at `local`. With `reuse_port` (SO_REUSEPORT), several
/// sockets of this process share the address and the kernel spreads clients over them by
/// a hash of their 4-tuple.
pub(crate) fn bind_udp(
    local: SocketAddr,
    role: SocketRole,
    reuse_port: bool,
) -> io::Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(local),
        Type::DGRAM.nonblocking().cloexec(),
        Some(Protocol::UDP),
    )?;
    if local.is_ipv6() {
        // IPv4 clients reach the IPv4 listener, never an IPv6 one as ::ffff:a.b.c.d.
        socket.set_only_v6(true)?;
    }
    receive_hop_limits(&socket, local)?;
    if role == SocketRole::Listener {
        // Best effort: the kernel caps it at net.core.rmem_max.
        let _ = socket.set_recv_buffer_size(LISTENER_BUFFER_BYTES);
        let _ = socket.set_send_buffer_size(LISTENER_BUFFER_BYTES);
    }
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&SockAddr::from(local))?;
    Ok(socket.into())
}

/// The (level, type) of the TTL (IPv4) or hop limit (IPv6) ancillary data of a socket
/// of `local`'s family, as received (with the option enabled) and as sent.
fn hop_limit_cmsg(local: SocketAddr) -> (libc::c_int, libc::c_int) {
    if local.is_ipv4() {
        (libc::IPPROTO_IP, libc::IP_TTL)
    } else {
        (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT)
    }
}

/// Asks the kernel for every datagram's TTL / hop limit (IP_RECVTTL, IPV6_RECVHOPLIMIT):
/// relayed datagrams leave with one less (RFC 8656 §14, see
/// [`crate::protocol::turn::relayed_hop_limit`]).
fn receive_hop_limits(socket: &Socket, local: SocketAddr) -> io::Result<()> {
    let (level, name) = if local.is_ipv4() {
        (libc::IPPROTO_IP, libc::IP_RECVTTL)
    } else {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT)
    };
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads size_of::<c_int>() bytes from `on`, which lives across
    // the call.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Ancillary data room per received datagram: one cmsghdr with an int (CMSG_SPACE(4) =
/// 24 bytes), 8-byte aligned.
type RecvControl = [u64; 4];

/// Buffers for one recvmmsg: BATCH datagrams of up to MAX_DATAGRAM bytes.
pub(crate) struct RecvBatch {
    buffers: Box<[[u8; MAX_DATAGRAM]]>,
    sources: [Option<SocketAddr>; BATCH],
    lengths: [usize; BATCH],
    hop_limits: [Option<u8>; BATCH],
    count: usize,
}

impl RecvBatch {
    pub(crate) fn new() -> Self {
        RecvBatch {
            buffers: vec![[0u8; MAX_DATAGRAM]; BATCH].into_boxed_slice(),
            sources: [None; BATCH],
            lengths: [0; BATCH],
            hop_limits: [None; BATCH],
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
        let mut controls: [RecvControl; BATCH] = [[0; 4]; BATCH];
        for (((buffer, iovec), (header, name)), control) in self
            .buffers
            .iter_mut()
            .zip(iovecs.iter_mut())
            .zip(headers.iter_mut().zip(names.iter_mut()))
            .zip(controls.iter_mut())
        {
            iovec.iov_base = buffer.as_mut_ptr().cast();
            iovec.iov_len = buffer.len();
            header.msg_hdr.msg_name = name.as_mut_ptr().cast();
            header.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_hdr.msg_iov = iovec;
            header.msg_hdr.msg_iovlen = 1;
            header.msg_hdr.msg_control = control.as_mut_ptr().cast();
            header.msg_hdr.msg_controllen = size_of::<RecvControl>();
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
            self.hop_limits[index] = received_hop_limit(header);
        }
        self.count = received;
        Ok(received)
    }

    /// The TTL / hop limit datagram `index` of the last batch arrived with, if the
    /// kernel said.
    pub(crate) fn hop_limit(&self, index: usize) -> Option<u8> {
        self.hop_limits.get(index).copied().flatten()
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

/// The IP_TTL / IPV6_HOPLIMIT value among a received message's ancillary data.
fn received_hop_limit(header: &libc::msghdr) -> Option<u8> {
    if header.msg_flags & libc::MSG_CTRUNC != 0 {
        return None;
    }
    // SAFETY: the kernel wrote `msg_controllen` bytes of well-formed cmsghdrs into the
    // control buffer `header` points at; CMSG_* stay within them, and the int is read
    // unaligned from inside the cmsg it belongs to.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(header);
        while !cmsg.is_null() {
            let kind = ((*cmsg).cmsg_level, (*cmsg).cmsg_type);
            if kind == (libc::IPPROTO_IP, libc::IP_TTL)
                || kind == (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT)
            {
                let value = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                return u8::try_from(value).ok();
            }
            cmsg = libc::CMSG_NXTHDR(header, cmsg);
        }
    }
    None
}

/// One datagram to send: the local socket's fd, the destination, the bytes and the TTL /
/// hop limit to send with (None: the socket's default).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outgoing<'a> {
    pub(crate) fd: RawFd,
    pub(crate) to: SocketAddr,
    pub(crate) payload: &'a [u8],
    pub(crate) hop_limit: Option<u8>,
}

/// `UDP_SEGMENT` from linux/udp.h (UDP GSO, Linux 4.18+); the libc crate lacks it for glibc.
const UDP_SEGMENT: libc::c_int = 103;
/// Most segments the kernel takes in one UDP GSO send (UDP_MAX_SEGMENTS).
const MAX_GSO_SEGMENTS: usize = 64;
/// Most payload bytes in one UDP GSO send (one IP datagram, with room for headers).
const MAX_GSO_BYTES: usize = 65_000;
/// Cleared the first time the kernel refuses UDP GSO outright (e.g. the route's device
/// cannot offload checksums); datagrams then leave one by one.
static GSO_ENABLED: AtomicBool = AtomicBool::new(true);

/// Sends `datagrams` with as few system calls as possible: one sendmmsg per run of
/// datagrams leaving the same socket, and within it one message per run of equally long
/// datagrams to the same destination (UDP GSO: the kernel builds one large packet and
/// splits it into the original datagrams on the way, so the stack is traversed once).
/// Returns how many could not be sent; UDP delivery is best effort, so those are dropped
/// like a full queue would drop them.
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
        let gso = GSO_ENABLED.load(Ordering::Relaxed);
        let sent = send_run(first.fd, chunk, gso);
        dropped += run - sent;
        start += run;
    }
    dropped
}

/// How many of the leading `datagrams` one GSO message can carry: same destination and
/// hop limit, same length (the last may be shorter), within the kernel's limits. At least
/// 1 when any.
fn gso_group_len(datagrams: &[Outgoing<'_>], gso: bool) -> usize {
    let Some(first) = datagrams.first() else {
        return 0;
    };
    let segment = first.payload.len();
    if !gso || segment == 0 {
        return 1;
    }
    let mut total = 0;
    let mut count = 0;
    for datagram in datagrams.iter().take(MAX_GSO_SEGMENTS) {
        let length = datagram.payload.len();
        if datagram.to != first.to
            || datagram.hop_limit != first.hop_limit
            || length > segment
            || length == 0
            || total + length > MAX_GSO_BYTES
        {
            break;
        }
        total += length;
        count += 1;
        if length < segment {
            break;
        }
    }
    count.max(1)
}

/// sendmmsg of at most BATCH datagrams from one socket (grouped into GSO messages when
/// `gso`); returns how many datagrams were sent.
fn send_run(fd: RawFd, datagrams: &[Outgoing<'_>], gso: bool) -> usize {
    let datagrams = datagrams
        .get(..datagrams.len().min(BATCH))
        .unwrap_or_default();
    let mut addresses: [MaybeUninit<SockAddr>; BATCH] = [const { MaybeUninit::uninit() }; BATCH];
    // SAFETY: iovec and mmsghdr are plain C structs for which all-zero is valid.
    let mut iovecs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    // Room for a cmsghdr carrying a u16 (UDP_SEGMENT, CMSG_SPACE(2) = 24 bytes) and one
    // carrying an int (the TTL / hop limit, CMSG_SPACE(4) = 24 bytes), 8-byte aligned.
    let mut controls = [[0u64; 6]; BATCH];
    // Per message: (index of its first datagram, number of datagrams).
    let mut groups = [(0usize, 0usize); BATCH];
    for (datagram, iovec) in datagrams.iter().zip(iovecs.iter_mut()) {
        iovec.iov_base = datagram.payload.as_ptr().cast_mut().cast();
        iovec.iov_len = datagram.payload.len();
    }
    let mut messages = 0;
    let mut start = 0;
    while let Some(first) = datagrams.get(start) {
        let segments = gso_group_len(datagrams.get(start..).unwrap_or_default(), gso);
        let address = addresses[messages].write(SockAddr::from(first.to));
        let header = &mut headers[messages].msg_hdr;
        header.msg_name = address.as_ptr().cast_mut().cast();
        header.msg_namelen = address.len();
        header.msg_iov = iovecs.as_mut_ptr().wrapping_add(start);
        header.msg_iovlen = segments;
        let gso = segments > 1;
        if gso || first.hop_limit.is_some() {
            let control = &mut controls[messages];
            header.msg_control = control.as_mut_ptr().cast();
            // SAFETY: CMSG_* only compute sizes and offsets; `control` is large and aligned
            // enough for a cmsghdr with a u16 and one with an int, msg_control and
            // msg_controllen describe exactly the ones written, and each value is written
            // inside its own cmsg.
            unsafe {
                let segment_space = libc::CMSG_SPACE(size_of::<u16>() as u32) as usize;
                let hop_limit_space = libc::CMSG_SPACE(size_of::<libc::c_int>() as u32) as usize;
                header.msg_controllen = if gso { segment_space } else { 0 }
                    + if first.hop_limit.is_some() {
                        hop_limit_space
                    } else {
                        0
                    };
                let mut cmsg = libc::CMSG_FIRSTHDR(header);
                if gso {
                    (*cmsg).cmsg_level = libc::SOL_UDP;
                    (*cmsg).cmsg_type = UDP_SEGMENT;
                    (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as usize;
                    std::ptr::write_unaligned(
                        libc::CMSG_DATA(cmsg).cast::<u16>(),
                        u16::try_from(first.payload.len()).unwrap_or(u16::MAX),
                    );
                    cmsg = libc::CMSG_NXTHDR(header, cmsg);
                }
                if let (Some(hop_limit), false) = (first.hop_limit, cmsg.is_null()) {
                    let (level, kind) = hop_limit_cmsg(first.to);
                    (*cmsg).cmsg_level = level;
                    (*cmsg).cmsg_type = kind;
                    (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::c_int>() as u32) as usize;
                    std::ptr::write_unaligned(
                        libc::CMSG_DATA(cmsg).cast::<libc::c_int>(),
                        libc::c_int::from(hop_limit),
                    );
                }
            }
        }
        groups[messages] = (start, segments);
        messages += 1;
        start += segments;
    }
    let mut next = 0;
    let mut sent = 0;
    while next < messages {
        // SAFETY: headers[next..messages] point at initialised addresses, iovecs and
        // control buffers of this frame, and at payloads borrowed for the duration of the
        // call; the kernel only reads them.
        let result = unsafe {
            libc::sendmmsg(
                fd,
                headers.as_mut_ptr().add(next),
                (messages - next) as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        match usize::try_from(result) {
            Ok(0) => break,
            Ok(count) => {
                sent += groups
                    .get(next..next + count)
                    .unwrap_or_default()
                    .iter()
                    .map(|(_, segments)| segments)
                    .sum::<usize>();
                next += count;
            }
            Err(_) => {
                let error = io::Error::last_os_error();
                match error.kind() {
                    io::ErrorKind::Interrupted => {}
                    io::ErrorKind::WouldBlock => break,
                    _ => {
                        let (first, segments) = groups[next];
                        let group = datagrams.get(first..first + segments).unwrap_or_default();
                        if segments > 1 {
                            // The kernel refused the GSO message (e.g. a segment larger
                            // than the path MTU): send its datagrams one by one.
                            if matches!(
                                error.raw_os_error(),
                                Some(libc::EIO | libc::EOPNOTSUPP | libc::ENOPROTOOPT)
                            ) && GSO_ENABLED.swap(false, Ordering::Relaxed)
                            {
                                tracing::warn!(%error, "UDP GSO is not available; sending datagrams one by one");
                            }
                            sent += send_run(fd, group, false);
                        } else if let Some(datagram) = group.first() {
                            // The kernel refused this datagram (e.g. no route to its
                            // destination): drop it and go on with the rest of the run.
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
                hop_limit: None,
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

    /// Receives until `expected` datagrams arrived (bounded in time), each as `read`
    /// takes it from its batch.
    fn receive_with<T>(
        receiver: &UdpSocket,
        expected: usize,
        read: impl Fn(&RecvBatch, usize) -> T,
    ) -> Vec<T> {
        let mut batch = RecvBatch::new();
        let mut seen = Vec::new();
        for _ in 0..100 {
            let count = batch.receive(receiver).expect("recvmmsg");
            seen.extend((0..count).map(|index| read(&batch, index)));
            if seen.len() >= expected {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        seen
    }

    /// Receives until `expected` datagrams arrived: their sources and bytes.
    fn receive_all(receiver: &UdpSocket, expected: usize) -> Vec<(SocketAddr, Vec<u8>)> {
        receive_with(receiver, expected, |batch, index| {
            let (source, bytes) = batch.datagram(index).expect("datagram");
            (source, bytes.to_vec())
        })
    }

    #[test]
    fn gso_groups_equal_datagrams_to_one_destination() {
        let one = SocketAddr::from(([127, 0, 0, 1], 1));
        let two = SocketAddr::from(([127, 0, 0, 1], 2));
        let long = [0u8; 100];
        let short = [0u8; 40];
        let datagram = |to, payload| Outgoing {
            fd: 3,
            to,
            payload,
            hop_limit: None,
        };
        let run = [
            datagram(one, &long[..]),
            datagram(one, &long[..]),
            datagram(one, &short[..]),
            datagram(one, &long[..]),
        ];
        assert_eq!(
            gso_group_len(&run, true),
            3,
            "a shorter datagram ends a group"
        );
        assert_eq!(gso_group_len(&run, false), 1);
        let mixed = [datagram(one, &long[..]), datagram(two, &long[..])];
        assert_eq!(gso_group_len(&mixed, true), 1);
        let growing = [datagram(one, &short[..]), datagram(one, &long[..])];
        assert_eq!(gso_group_len(&growing, true), 1);
        let empty = [datagram(one, &[][..]), datagram(one, &[][..])];
        assert_eq!(gso_group_len(&empty, true), 1);
        assert_eq!(gso_group_len(&[], true), 0);
    }

    #[test]
    fn gso_messages_arrive_as_the_original_datagrams() {
        let sender = loopback_socket();
        let first = loopback_socket();
        let second = loopback_socket();
        let (to_first, to_second) = (
            first.local_addr().expect("addr"),
            second.local_addr().expect("addr"),
        );
        // Equal lengths to one destination (one GSO message with a shorter tail), then
        // another destination: the order per destination must survive.
        let mut payloads: Vec<(SocketAddr, Vec<u8>)> =
            (0..20u8).map(|i| (to_first, vec![i; 120])).collect();
        payloads.push((to_first, vec![99; 7]));
        payloads.extend((0..5u8).map(|i| (to_second, vec![i; 300])));
        let outgoing: Vec<Outgoing<'_>> = payloads
            .iter()
            .map(|(to, payload)| Outgoing {
                fd: sender.as_raw_fd(),
                to: *to,
                payload,
                // A TTL next to the GSO segment size in the same message.
                hop_limit: Some(9),
            })
            .collect();
        assert_eq!(send_batch(&outgoing), 0);
        assert!(
            GSO_ENABLED.load(Ordering::Relaxed),
            "loopback takes UDP GSO messages"
        );

        let source = sender.local_addr().expect("addr");
        let expect = |to: SocketAddr| -> Vec<(SocketAddr, Vec<u8>)> {
            payloads
                .iter()
                .filter(|(destination, _)| *destination == to)
                .map(|(_, payload)| (source, payload.clone()))
                .collect()
        };
        assert_eq!(receive_all(&first, 21), expect(to_first));
        assert_eq!(receive_all(&second, 5), expect(to_second));
    }

    #[test]
    fn eventfd_wakes_an_epoll_loop_until_cleared() {
        let epoll = Epoll::new().expect("epoll");
        let event = event_fd().expect("eventfd");
        epoll.add(event.as_raw_fd(), u64::MAX).expect("watch");
        let mut ready = ReadyTokens::new();
        assert_eq!(ready.poll(&epoll).expect("epoll_wait"), 0);
        wake(&event);
        wake(&event);
        assert_eq!(ready.poll(&epoll).expect("epoll_wait"), 1);
        assert_eq!(ready.tokens().collect::<Vec<_>>(), vec![u64::MAX]);
        clear_wake(&event);
        assert_eq!(ready.poll(&epoll).expect("epoll_wait"), 0);
    }

    #[test]
    fn socket_table_tracks_binds_and_closes() {
        let mut table = SocketTable::new(Epoll::new().expect("epoll"));
        let probe = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let address = probe.local_addr().expect("addr");
        drop(probe);
        table.bind(address, SocketRole::Relay).expect("bind relay");
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
        assert!(table.by_address(address).is_none());
        table
            .bind(address, SocketRole::Relay)
            .expect("port is free again after close");
    }

    #[test]
    fn datagrams_leave_with_the_hop_limit_asked_for_and_arrive_with_it_known() {
        for local in ["127.0.0.1:0", "[::1]:0"] {
            let local: SocketAddr = local.parse().expect("addr");
            let bind = || bind_udp(local, SocketRole::Relay, false).expect("bind with IP_RECVTTL");
            let (sender, receiver) = (bind(), bind());
            let to = receiver.local_addr().expect("addr");
            let payloads = [[1u8; 50], [2u8; 50], [3u8; 50]];
            let hop_limits = [Some(7), Some(7), None];
            let outgoing: Vec<Outgoing<'_>> = payloads
                .iter()
                .zip(hop_limits)
                .map(|(payload, hop_limit)| Outgoing {
                    fd: sender.as_raw_fd(),
                    to,
                    payload,
                    hop_limit,
                })
                .collect();
            assert_eq!(send_batch(&outgoing), 0);
            let seen = receive_with(&receiver, payloads.len(), |batch, index| {
                let (_, bytes) = batch.datagram(index).expect("datagram");
                (bytes[0], batch.hop_limit(index))
            });
            assert_eq!(seen.len(), 3, "{local}");
            assert_eq!(&seen[..2], [(1, Some(7)), (2, Some(7))], "{local}");
            let (last, default) = seen[2];
            assert_eq!(last, 3);
            assert!(default.is_some_and(|hops| hops > 7), "{local}: {default:?}");
        }
    }
}
