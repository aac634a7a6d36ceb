//! turn-relay: an eBPF/XDP-accelerated TURN relay (RFC 8656) with a STUN (RFC 8489) core.
//!
//! Layout:
//! - [`stun`]: zero-copy STUN codec (RFC 8489).
//! - [`turn`]: the sans-IO TURN server state machine (RFC 8656).
//! - [`auth`]: long-term and shared-secret credentials, stateless nonces.
//! - [`policy`]: which peer addresses may be relayed to.
//! - [`datapath`]: the narrow surface through which the core programs the fast path.
//! - [`bpf`]: the XDP program's loader and the BPF implementation of [`datapath::Datapath`].
//! - [`config`]: the TOML configuration and its validation.
//! - [`daemon`]: the tokio event loop that drives the core with real sockets.

pub mod auth;
pub mod bench;
pub mod bpf;
pub mod config;
pub mod daemon;
pub mod datapath;
pub mod policy;
pub mod stun;
pub mod turn;
