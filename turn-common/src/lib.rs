//! Types shared by the XDP program (`turn-ebpf`) and the daemon (`turn-userspace`).
#![no_std]
