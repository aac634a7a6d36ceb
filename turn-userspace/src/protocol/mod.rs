//! The sans-IO protocol core, in the style of quinn-proto: no sockets, no tokio, no clock
//! reads; time comes in as an argument and randomness from an injected RNG.
//!
//! - [`stun`]: zero-copy STUN codec (RFC 8489).
//! - [`turn`]: the TURN server state machine (RFC 8656).
//! - [`auth`]: long-term and shared-secret credentials, stateless nonces.
//! - [`policy`]: which peer addresses may be relayed to.
//! - [`datapath`]: the narrow surface through which the core programs the fast path.

pub mod auth;
pub mod datapath;
pub mod policy;
pub mod stun;
pub mod turn;
