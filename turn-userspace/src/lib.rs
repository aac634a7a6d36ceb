//! turn-relay: an eBPF/XDP-accelerated TURN relay (RFC 8656) with a STUN (RFC 8489) core.
//!
//! Three concerns, three modules:
//! - [`protocol`]: the sans-IO core (STUN codec, TURN server, auth, peer policy, and the
//!   fast-path commands it emits with their applier in [`protocol::datapath`]). Free of
//!   tokio, sockets and clocks.
//! - [`bpf`]: the XDP side: the program's loader, its maps, and the BPF implementation of
//!   the datapath.
//! - [`daemon`]: the tokio event loop that drives the core with real sockets, its
//!   configuration, metrics and start-up.

pub mod bpf;
pub mod daemon;
pub mod protocol;
