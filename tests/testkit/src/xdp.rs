//! Trivial XDP programs on veth ends, loaded with aya from the daemon's own object.
//!
//! A frame the relay's XDP program sends with XDP_TX or XDP_REDIRECT into a veth is
//! dropped (`xdp_tx_errors`) unless the receiving end runs an XDP program itself, so the
//! client's and peer's ends get the pass-only program; the benchmark's kernel-speed mode
//! puts the drop-everything program on the peer's end so that the peer's own stack does
//! not limit what is measured.

use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};

use anyhow::{anyhow, Context, Result};
use turn_relay::bpf::testing::{object, DROP_PROGRAM, PASS_PROGRAM};

use crate::addresses::OUTER_INTERFACE;
use crate::netns::Namespace;
use crate::topology::Topology;

/// Which trivial program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StubAction {
    Pass,
    Drop,
}

/// A trivial program attached in native mode to one interface through a bpf_link;
/// detached when dropped (or when its namespace goes away).
pub struct StubXdp {
    /// Owns the program and its link.
    _ebpf: Ebpf,
}

impl StubXdp {
    pub fn attach(netns: &Namespace, interface: &str, action: StubAction) -> Result<StubXdp> {
        let name = match action {
            StubAction::Pass => PASS_PROGRAM,
            StubAction::Drop => DROP_PROGRAM,
        };
        let ebpf = netns
            .run_inside(|| {
                let mut ebpf = EbpfLoader::new()
                    .load(object())
                    .context("loading the XDP object")?;
                let program: &mut Xdp = ebpf
                    .program_mut(name)
                    .ok_or_else(|| anyhow!("the XDP object has no program {name}"))?
                    .try_into()?;
                program.load().with_context(|| format!("loading {name}"))?;
                program
                    .attach(interface, XdpMode::Driver)
                    .with_context(|| format!("attaching {name} to {interface}"))?;
                Ok(ebpf)
            })
            .with_context(|| format!("in {}", netns.name()))?;
        let shown = netns.ip(&["link", "show", "dev", interface])?;
        anyhow::ensure!(
            shown.contains("xdp"),
            "{name} not shown on {interface}: {shown}"
        );
        Ok(StubXdp { _ebpf: ebpf })
    }
}

/// The pass-only program on the client's and the peer's `eth0`, so they accept what the
/// relay's XDP program redirects or transmits to them (detached when dropped).
pub fn pass_on_outer_ends(topology: &Topology) -> Result<[StubXdp; 2]> {
    Ok([
        StubXdp::attach(&topology.client, OUTER_INTERFACE, StubAction::Pass)
            .context("client eth0")?,
        StubXdp::attach(&topology.peer, OUTER_INTERFACE, StubAction::Pass).context("peer eth0")?,
    ])
}
