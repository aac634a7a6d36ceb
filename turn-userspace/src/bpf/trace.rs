//! The opt-in trace of the XDP program's decisions (`xdp.trace`): one aya-log record per
//! frame (outcome, action, UDP flow) from the program's ring buffer, handed to the
//! daemon's log (`log` records become `tracing` events) by a thread of its own.
//!
//! Off, the program is loaded with aya-log's level global at 0 in read-only data: the
//! verifier sees the logging branch of `trace_decision` (turn-ebpf) as dead and removes
//! it, so tracing costs nothing per frame unless it is on.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use aya::{Ebpf, EbpfLoader};
use aya_log::{EbpfLogger, Level, LEVEL};

/// aya-log's level global when the trace is off: no level is enabled.
static TRACE_OFF: u8 = 0;
/// The level the program's trace records carry: enabled when the trace is on.
static TRACE_ON: u8 = Level::Info as u8;
/// How long the forwarding thread waits for records before it checks whether to stop.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Sets the program's log level before it is loaded: the trace on or off.
pub(crate) fn set_level(loader: &mut EbpfLoader<'_>, on: bool) {
    loader.override_global(LEVEL, if on { &TRACE_ON } else { &TRACE_OFF }, true);
}

/// Forwards the program's trace records to a logger until dropped.
pub struct DecisionTrace {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for DecisionTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionTrace").finish_non_exhaustive()
    }
}

impl DecisionTrace {
    /// Starts forwarding the records of `ebpf`'s program (loaded with the trace on) to
    /// `logger`.
    pub(crate) fn start<L: log::Log + Send + 'static>(
        ebpf: &mut Ebpf,
        logger: L,
    ) -> anyhow::Result<DecisionTrace> {
        let mut records = EbpfLogger::init_with_logger(ebpf, logger)
            .context("opening the XDP trace ring buffer")?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("xdp-trace".into())
            .spawn(move || {
                let timeout = POLL_INTERVAL.as_millis() as libc::c_int;
                while !stopped.load(Ordering::Relaxed) {
                    let mut readable = libc::pollfd {
                        fd: records.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd for the ring buffer's descriptor, which
                    // `records` keeps open.
                    unsafe { libc::poll(&mut readable, 1, timeout) };
                    records.flush();
                }
            })
            .context("starting the XDP trace thread")?;
        Ok(DecisionTrace {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for DecisionTrace {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // A panic in the thread has already been reported by the panic hook.
            let _ = thread.join();
        }
    }
}
