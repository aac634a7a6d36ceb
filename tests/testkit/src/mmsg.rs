//! Batched socket I/O for the load generator and sinks: the one sendmmsg and the one
//! recvmmsg wrapper. The hot loops keep raw `mmsghdr` arrays (built once per batch, or
//! once per run) because they send hundreds of thousands of datagrams per second.

use std::os::fd::{AsRawFd, RawFd};

/// Datagrams per sendmmsg/recvmmsg call.
pub const BATCH: usize = 64;
/// Largest datagram a [`ReceiveBatch`] reads.
const MAX_DATAGRAM: usize = 2048;

/// One iovec per buffer, each covering `lengths[i]` bytes (the whole buffer when
/// `lengths` is shorter).
pub fn iovecs(buffers: &mut [Vec<u8>], lengths: &[usize]) -> Vec<libc::iovec> {
    buffers
        .iter_mut()
        .enumerate()
        .map(|(index, buffer)| libc::iovec {
            iov_len: lengths.get(index).copied().unwrap_or(buffer.len()),
            iov_base: buffer.as_mut_ptr().cast(),
        })
        .collect()
}

/// One mmsghdr per iovec (no control data), header `i` naming address slot `names[i]`
/// when `names` is given (then there are at most `names.len()` headers). The headers
/// point into `iovecs` (and `names`), so those and the buffers they point to must outlive
/// every call that uses them.
pub fn headers(
    iovecs: &mut [libc::iovec],
    names: Option<&mut [libc::sockaddr_in6]>,
) -> Vec<libc::mmsghdr> {
    let mut headers: Vec<libc::mmsghdr> = iovecs
        .iter_mut()
        .map(|iov| {
            // SAFETY: an all-zero mmsghdr is valid; the iovec pointer is set below.
            let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
            header.msg_hdr.msg_iov = iov;
            header.msg_hdr.msg_iovlen = 1;
            header
        })
        .collect();
    if let Some(names) = names {
        headers.truncate(names.len());
        for (header, name) in headers.iter_mut().zip(names.iter_mut()) {
            header.msg_hdr.msg_name = (name as *mut libc::sockaddr_in6).cast();
            header.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as u32;
        }
    }
    headers
}

/// One non-blocking sendmmsg of every header; returns how many datagrams the kernel
/// accepted (0 on error, e.g. a full socket buffer).
///
/// # Safety
/// The iovecs, buffers and address slots the headers point to must be alive.
pub unsafe fn send(fd: RawFd, headers: &mut [libc::mmsghdr]) -> usize {
    // SAFETY: the caller guarantees what the headers point to is alive.
    let result = unsafe {
        libc::sendmmsg(
            fd,
            headers.as_mut_ptr(),
            headers.len() as u32,
            libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(result).unwrap_or(0)
}

/// Sends every buffer as one datagram on a connected socket with one sendmmsg; returns
/// how many the kernel accepted.
pub fn send_buffers(socket: &impl AsRawFd, buffers: &mut [Vec<u8>]) -> usize {
    let mut iovecs = iovecs(buffers, &[]);
    let mut headers = headers(&mut iovecs, None);
    // SAFETY: headers → iovecs → buffers, all alive for the call.
    unsafe { send(socket.as_raw_fd(), &mut headers) }
}

/// Receive buffers and the source addresses of up to [`BATCH`] datagrams.
pub struct ReceiveBatch {
    pub buffers: Vec<Vec<u8>>,
    pub lengths: Vec<usize>,
    names: Vec<libc::sockaddr_in6>,
}

impl Default for ReceiveBatch {
    fn default() -> Self {
        ReceiveBatch {
            buffers: vec![vec![0u8; MAX_DATAGRAM]; BATCH],
            lengths: vec![0; BATCH],
            // SAFETY: an all-zero sockaddr_in6 is valid (it also holds a sockaddr_in).
            names: vec![unsafe { std::mem::zeroed() }; BATCH],
        }
    }
}

impl ReceiveBatch {
    /// One non-blocking recvmmsg; returns the datagram count.
    pub fn receive(&mut self, socket: &impl AsRawFd) -> usize {
        let mut iovecs = iovecs(&mut self.buffers, &[]);
        let mut headers = headers(&mut iovecs, Some(&mut self.names));
        // SAFETY: all pointers reference live buffers owned by self for the call's duration.
        let result = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                headers.len() as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let count = usize::try_from(result).unwrap_or(0);
        for (length, header) in self.lengths.iter_mut().zip(&headers).take(count) {
            *length = header.msg_len as usize;
        }
        count
    }

    /// The datagrams of the last [`ReceiveBatch::receive`] that returned `count`.
    pub fn datagrams(&self, count: usize) -> impl Iterator<Item = &[u8]> {
        self.buffers
            .iter()
            .zip(&self.lengths)
            .take(count)
            .map(|(buffer, &length)| buffer.get(..length).unwrap_or_default())
    }

    /// Sends the first `count` datagrams back to where they came from.
    pub fn echo(&mut self, socket: &impl AsRawFd, count: usize) -> usize {
        let count = count.min(BATCH);
        let mut iovecs = iovecs(&mut self.buffers[..count], &self.lengths);
        let mut headers = headers(&mut iovecs, Some(&mut self.names[..count]));
        // SAFETY: as in `receive`.
        unsafe { send(socket.as_raw_fd(), &mut headers) }
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn batches_cross_loopback_and_echo_back() {
        let sink = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sender
            .connect(sink.local_addr().expect("addr"))
            .expect("connect");
        let mut buffers = vec![b"one".to_vec(), b"three".to_vec()];
        assert_eq!(send_buffers(&sender, &mut buffers), 2);
        let mut batch = ReceiveBatch::default();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut received: Vec<Vec<u8>> = Vec::new();
        while received.len() < 2 && Instant::now() < deadline {
            let count = batch.receive(&sink);
            received.extend(batch.datagrams(count).map(<[u8]>::to_vec));
            if count > 0 {
                assert_eq!(batch.echo(&sink, count), count);
            }
        }
        assert_eq!(received, [b"one".to_vec(), b"three".to_vec()]);
        sender
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut echoed = [0u8; 16];
        let len = sender.recv(&mut echoed).expect("echo");
        assert_eq!(&echoed[..len], b"one");
    }
}
