//! The sans-IO protocol core, in the style of quinn-proto: no sockets, no tokio, no clock
//! reads; time comes in as an argument and randomness from an injected RNG.
//!
//! - [`stun`]: zero-copy STUN codec (RFC 8489).
//! - [`turn`]: the TURN server state machine (RFC 8656).
//! - [`auth`]: long-term and shared-secret credentials, stateless nonces.
//! - [`policy`]: which peer addresses may be relayed to.
//! - [`datapath`]: the fast-path commands the core emits, and the applier that programs a
//!   fast path with them.

pub mod auth;
pub mod datapath;
pub mod policy;
pub mod stun;
pub mod turn;
