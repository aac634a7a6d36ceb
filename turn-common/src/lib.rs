//! Types shared by the XDP program (`turn-ebpf`) and the daemon (`turn-userspace`).
//!
//! Everything here is `no_std` and free of I/O so the same definitions compile for
//! `bpfel-unknown-none` and for the host, where unit tests pin their layout.
#![no_std]

pub mod bandwidth;
pub mod checksum;
pub mod counters;
pub mod inject;
pub mod maps;
pub mod stun;
