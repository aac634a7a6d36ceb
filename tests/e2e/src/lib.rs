//! End-to-end tests of turn-relay; everything is under `tests/`, built on `turn-testkit`:
//!
//! - `stun_binding`, `relay`, `authentication`, `expiry`, `xdp_e2e`: the daemon in
//!   client/relay/peer network namespaces, driven by coturn's tools and the testkit's
//!   TURN client; `harness_with_coturn`: the same harness against coturn's `turnserver`.
//! - `xdp_fixtures`: the XDP program's fixture tables under BPF_PROG_TEST_RUN, one file
//!   of rows per path; `xdp_expiry`: entries stop relaying when they expire.
//! - `xdp_attach`, `xdp_live`: the program attached to veths, relaying live traffic.
