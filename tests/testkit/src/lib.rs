//! turn-testkit: the one home of what the end-to-end tests (`tests/e2e`) and the
//! benchmark (`tests/bench`) share.
//!
//! - [`addresses`]: the one address plan (198.18.0.0/15 and 2001:2::/48 only).
//! - [`netns`] and [`topology`]: network namespaces (the only place that creates them) and
//!   the client ⇄ relay ⇄ peer topology; [`balancer`]: several relays behind an nftables
//!   balancer; [`testbed`]: one namespace in which the XDP program runs under
//!   BPF_PROG_TEST_RUN.
//! - [`process`]: child processes bounded in time, killed on drop; [`privilege`]: root
//!   checks and unique names.
//! - [`config`] and [`daemon`]: the daemon's TOML written with serde, the daemon as a
//!   child process, its metrics.
//! - [`coturn`]: coturn's `turnutils_*` tools and `turnserver`; [`credentials`]: REST and
//!   zrest credentials.
//! - [`stun_client`]: the STUN/TURN client, on the relay's own codec, over UDP, TCP or
//!   TLS; [`tls`]: test certificates and the TLS client configuration;
//!   [`proxy_protocol`]: a PROXY-v2-speaking TCP proxy in front of the relay;
//!   [`in_memory`]: the relay's sans-IO core built from a [`config::RelayConfig`] as the
//!   daemon builds it, driven in memory.
//! - [`capture`]: tcpdump captures and tshark's reading of them.
//! - [`frames`]: Ethernet/IP/UDP frames built with etherparse, independently of the XDP
//!   program; [`mmsg`]: the sendmmsg/recvmmsg wrappers.
//! - [`xdp`]: trivial XDP programs for veth ends (aya); [`fast_path`]: the one helper
//!   that writes the XDP program's flow tables.

pub mod addresses;
pub mod balancer;
pub mod capture;
pub mod config;
pub mod coturn;
pub mod credentials;
pub mod daemon;
pub mod fast_path;
pub mod frames;
pub mod in_memory;
pub mod mmsg;
pub mod netns;
pub mod privilege;
pub mod process;
pub mod proxy_protocol;
pub mod stun_client;
pub mod testbed;
pub mod tls;
pub mod topology;
pub mod xdp;

pub use privilege::privileged;
pub use process::OrFail;
