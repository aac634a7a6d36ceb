//! The per-core part of `results.md`: relay CPU per relayed packet on one pinned core,
//! the drop-only and redirect-only floors under it, the XDP program's cost under live
//! traffic by rate, and the kernel-speed table with the relay core's wake-up latency.

use std::fmt::Write as _;

use super::{first_line, max_rate, pps};
use crate::bench::LOSS_THRESHOLD;
use crate::disturbance::{
    WakeLatency, FOREIGN_LIMIT_MS, RING_FILL_AT_1M_PPS_US, STEAL_LIMIT_MS, VETH_RING_FRAMES,
    WAKE_INTERVAL_US,
};
use crate::live_cost::{LiveCostByRate, TimedProgram, TimedStep};
use crate::load::RelayMode;
use crate::per_core::{self, FloorProgram, FloorRow, Generator, PerCoreReport, LIVE_TRIES};

/// Per-core targets of issue 11: relay CPU per packet as a fraction of coturn's, for
/// frames from sockets (skbs on veth) and live frames (XDP frames).
fn per_core_target(server: &str, generator: Generator) -> Option<f64> {
    match (server, generator) {
        ("ours-xdp", Generator::Sockets) => Some(0.2),
        ("ours-xdp", Generator::LiveFrames) => Some(0.1),
        (name, _) if name.starts_with("ours-userspace") => Some(0.5),
        _ => None,
    }
}

/// Issue 11's kernel-speed target: ours-xdp's highest relayed rate ≥ 10× coturn's.
const KERNEL_SPEED_TARGET: f64 = 10.0;

/// The headline tables: relay CPU per relayed packet on one pinned core, and the
/// highest rate of live frames relayed there.
pub(super) fn per_core_section(per_core: &PerCoreReport, md: &mut String) {
    let _ = writeln!(
        md,
        "## Relay CPU per relayed packet, relay pinned to one core\n\n\
         IPv4, {} flows, {} B payload, fixed offered rates, {:.1} s per step. Each server runs one relay \
         thread (coturn `--relay-threads=1`, ours `--threads 1`; ours-xdp relays in its XDP program, native \
         mode). Threaded NAPI is on at the relay's client-side veth end (GRO on there) and at the peer's end; \
         the server process and the relay's `napi/to-client-*` kthreads are pinned to CPU {}, the generator, \
         the sink and the peer's NAPI kthreads to CPU {}; every other thread that may move is kept off CPU {} \
         meanwhile, as `isolcpus` would keep it. *Relay CPU* = run time (schedstat, ns) of all the \
         server's threads (*process*) plus its NAPI kthreads (*NAPI*: GRO and the UDP receive path, or the \
         XDP program) during the step, per packet that reached the peer (*pkts/run*: packets per time the server's threads / the NAPI kthreads \
         were put on the CPU, i.e. per wake-up); it includes interrupts and softirqs \
         that hit CPU {} while they ran (no CONFIG_IRQ_TIME_ACCOUNTING). Two generators: *sockets* sends with \
         sendmmsg, so frames reach the relay's veth as skbs (as in containers; the peer's sink socket counts them); \
         *live frames* injects prebuilt frames with BPF_PROG_TEST_RUN in live-frames mode (an XDP_TX program on the \
         client's veth end, as xdp-trafficgen), so they reach it as XDP frames, as from a NIC driver (counted at the \
         peer's veth end, which drops them). Targets: ours-xdp ≤ 0.20× coturn with skbs, ≤ 0.10× with XDP frames; \
         ours-userspace ≤ 0.50× with both. Ratios compare rows of the same load, generator and rate. \
         *ours-userspace, coalesce_us N* (in runs of ours at the defaults): ours-userspace once more, with \
         `server.coalesce_us = N` (off by default): its worker waits N µs after each wake-up before it \
         reads, so that more datagrams share the wake-up, at the price of that much added delay.\n",
        per_core::FLOWS,
        per_core::PAYLOAD_LEN,
        per_core.step_seconds,
        per_core::RELAY_CPU,
        per_core::LOAD_CPU,
        per_core::RELAY_CPU,
        per_core::RELAY_CPU,
    );
    for error in &per_core.errors {
        let _ = writeln!(md, "**Not measured:** {}\n", first_line(error));
    }
    let _ = writeln!(
        md,
        "| load | generator | offered pps | server | relayed pps | loss | process µs | NAPI µs | pkts/run process / NAPI | relay CPU µs/pkt | × coturn | target |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for mode in [RelayMode::ChannelData, RelayMode::SendIndication] {
        for generator in Generator::ALL {
            for &rate in &per_core.rates {
                per_core_rows(per_core, mode, generator, rate, md);
            }
        }
    }
    let _ = writeln!(md);
    veth_floors(per_core, md);
    live_cost_table(&per_core.live_cost, md);
    kernel_speed_table(per_core, md);
}

/// The table rows of `mode`, `generator` and `rate`, each with its ratio to coturn's.
fn per_core_rows(
    per_core: &PerCoreReport,
    mode: RelayMode,
    generator: Generator,
    rate: f64,
    md: &mut String,
) {
    let coturn = per_core.row("coturn", mode, generator, rate);
    for row in per_core
        .rows
        .iter()
        .filter(|row| row.mode == mode && row.generator == generator && row.target_pps == rate)
    {
        let ratio = coturn
            .filter(|c| c.total_ns() > 0.0)
            .map(|c| row.total_ns() / c.total_ns());
        let verdict = match (per_core_target(&row.server, generator), ratio) {
            (Some(target), Some(ratio)) if ratio <= target => format!("≤ {target:.2}: met"),
            (Some(target), Some(_)) => format!("≤ {target:.2}: **missed**"),
            (Some(target), None) => format!("≤ {target:.2}: no coturn figure"),
            (None, _) => String::new(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {:.2} % | {:.2} | {:.2} | {:.1} / {:.1} | **{:.2}** | {} | {verdict} |",
            mode.label(),
            generator.label(),
            pps(row.offered_pps),
            row.server,
            pps(row.relayed_pps),
            row.loss_ratio * 100.0,
            row.process_ns / 1000.0,
            row.napi_ns / 1000.0,
            row.packets_per_process_run,
            row.packets_per_napi_run,
            row.total_ns() / 1000.0,
            ratio.map_or("–".to_owned(), |r| format!("{r:.2}")),
        );
    }
}

/// What veth costs an XDP program on the relay's client-side end, from the floor rows:
/// turning skbs into XDP frames (the drop-only floor and ours-xdp fed by each
/// generator), redirecting into the peer's veth (redirect-only over drop-only floor), and
/// what is left to the relay program itself (ours-xdp over the redirect-only floor).
fn veth_floors(per_core: &PerCoreReport, md: &mut String) {
    for &rate in &per_core.rates {
        for program in FloorProgram::ALL {
            for generator in Generator::ALL {
                if let Some(floor) = per_core.floor(program, generator, rate) {
                    floor_bullet(floor, md);
                }
            }
        }
        let xdp = |generator| per_core.row("ours-xdp", RelayMode::ChannelData, generator, rate);
        let (Some(skbs), Some(frames)) = (xdp(Generator::Sockets), xdp(Generator::LiveFrames))
        else {
            continue;
        };
        let conversion = skbs.total_ns() - frames.total_ns();
        let _ = write!(
            md,
            "- ours-xdp, ChannelData at {} pps: {:.2} µs per packet fed skbs, {:.2} µs fed XDP frames: \
             {:.2} µs ({:.0} %) of the skb figure is veth turning skbs into XDP frames",
            pps(rate),
            skbs.total_ns() / 1000.0,
            frames.total_ns() / 1000.0,
            conversion / 1000.0,
            100.0 * conversion / skbs.total_ns().max(1.0)
        );
        let drop = |generator| per_core.floor(FloorProgram::Drop, generator, rate);
        if let (Some(skb_floor), Some(frame_floor)) =
            (drop(Generator::Sockets), drop(Generator::LiveFrames))
        {
            let _ = write!(
                md,
                " (the drop-only floors differ by {:.2} µs)",
                (skb_floor.napi_ns - frame_floor.napi_ns) / 1000.0
            );
        }
        let _ = write!(md, ".");
        for (generator, row, fed) in [
            (Generator::LiveFrames, frames, "XDP frames"),
            (Generator::Sockets, skbs, "skbs"),
        ] {
            if let Some(split) = over_floors(per_core, generator, rate, row.napi_ns) {
                let _ = write!(
                    md,
                    " Fed {fed}, its NAPI CPU over the drop-only floor: {split}."
                );
            }
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md);
}

/// One floor row as a bullet.
fn floor_bullet(floor: &FloorRow, md: &mut String) {
    let (program, what) = match floor.program {
        FloorProgram::Drop => (
            "Drop-only",
            "the floor of any XDP program fed such frames on veth",
        ),
        FloorProgram::Redirect => (
            "Redirect-only",
            "the floor of any XDP program that relays such frames into another veth",
        ),
    };
    let how = match floor.program {
        FloorProgram::Drop => String::new(),
        FloorProgram::Redirect => " (every UDP frame redirected unchanged into the relay's peer-side veth \
             through a one-entry DEVMAP, `bpf_redirect_map` as the relay's program redirects; dropped at the \
             peer's end)"
            .to_owned(),
    };
    let delivered = floor.delivered_ratio.map_or(String::new(), |ratio| {
        format!(
            "; {:.2} % of the frames sent reached the peer's veth end",
            ratio * 100.0
        )
    });
    let _ = writeln!(
        md,
        "- {program} XDP program on the same veth end{how}, no server, same pinning, ChannelData from {} at \
         {} pps: {:.2} µs of NAPI CPU per frame, {:.1} frames per NAPI run, so {:.1} µs per run{delivered}: \
         {what}.",
        floor.generator.label(),
        pps(floor.offered_pps),
        floor.napi_ns / 1000.0,
        floor.packets_per_napi_run,
        floor.napi_ns * floor.packets_per_napi_run / 1000.0
    );
}

/// ours-xdp's NAPI CPU per packet (`napi_ns`) fed by `generator` at `rate` over the
/// drop-only floor, split at the redirect-only floor when there is one; None without a
/// drop-only floor.
fn over_floors(
    per_core: &PerCoreReport,
    generator: Generator,
    rate: f64,
    napi_ns: f64,
) -> Option<String> {
    let drop = per_core.floor(FloorProgram::Drop, generator, rate)?;
    let over = format!("{:+.2} µs", (napi_ns - drop.napi_ns) / 1000.0);
    Some(
        match per_core.floor(FloorProgram::Redirect, generator, rate) {
            Some(redirect) => format!(
                "{over}, of which {:+.2} µs the redirect into the peer's veth, waking that end's NAPI \
                 kthread on CPU {} included (redirect-only − drop-only floor), and {:+.2} µs the relay \
                 program's own work (ours-xdp − redirect-only floor)",
                (redirect.napi_ns - drop.napi_ns) / 1000.0,
                per_core::LOAD_CPU,
                (napi_ns - redirect.napi_ns) / 1000.0
            ),
            None => over,
        },
    )
}

/// Issue 11's target for `turn_xdp` under live traffic, IPv4 ChannelData: ns per packet
/// (bpf_stats, less a pass-only program's).
const LIVE_PROGRAM_TARGET_NS: f64 = 150.0;

/// `turn_xdp`'s cost per packet under live traffic at each rate, against the pass-only
/// program's at the same rate.
fn live_cost_table(live_cost: &LiveCostByRate, md: &mut String) {
    if live_cost.steps.is_empty() && live_cost.not_measured.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "## XDP program cost under live traffic, by rate\n\n\
         ours-xdp's `turn_xdp` on the pinned relay core as above, fed live frames (IPv4, {} flows, {} B \
         payload) at fixed offered rates, timed by bpf_stats (`kernel.bpf_stats_enabled=1` during these steps \
         only; `run_time_ns` / `run_cnt` of the program on the relay's client-side veth end). Then, after \
         ours-xdp stopped (its program cannot be replaced while it runs), the pass-only program `xdp_pass` in \
         its place on the same veth end, same pinning, same loads and rates; the frames it passes go up the \
         relay namespace's stack to no socket. *relayed* and *loss* are `turn_xdp`'s step's. Target (issue \
         11): ≤ {LIVE_PROGRAM_TARGET_NS:.0} ns per packet for IPv4 ChannelData.\n\n\
         | load | offered pps | relayed pps | loss | turn_xdp ns/run | pass-only ns/run | program ns/packet | target |\n\
         |---|---|---|---|---|---|---|---|",
        per_core::FLOWS,
        per_core::PAYLOAD_LEN,
    );
    for mode in [RelayMode::ChannelData, RelayMode::SendIndication] {
        for &rate in &live_cost.rates {
            let Some(relay) = live_cost.step(TimedProgram::Relay, mode, rate) else {
                continue;
            };
            let pass = live_cost.step(TimedProgram::PassOnly, mode, rate);
            let program_ns = live_cost.program_ns(mode, rate);
            let verdict = match (mode, program_ns) {
                (RelayMode::ChannelData, Some(ns)) if ns <= LIVE_PROGRAM_TARGET_NS => {
                    format!("≤ {LIVE_PROGRAM_TARGET_NS:.0}: met")
                }
                (RelayMode::ChannelData, Some(_)) => {
                    format!("≤ {LIVE_PROGRAM_TARGET_NS:.0}: **missed**")
                }
                (RelayMode::ChannelData, None) => {
                    format!("≤ {LIVE_PROGRAM_TARGET_NS:.0}: no pass-only figure")
                }
                _ => "no live target".to_owned(),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.2} %{} | {:.1} | {} | {} | {verdict} |",
                mode.label(),
                pps(relay.offered_pps),
                pps(relay.relayed_pps),
                relay.loss_ratio * 100.0,
                if relay.disturbed { " (disturbed)" } else { "" },
                relay.runs.ns_per_run,
                pass.map_or("–".to_owned(), |pass| format!(
                    "{:.1}",
                    pass.runs.ns_per_run
                )),
                program_ns.map_or("–".to_owned(), |ns| format!("**{ns:.1}**")),
            );
        }
    }
    let _ = writeln!(
        md,
        "\n*program ns/packet* = turn_xdp's ns per run − the pass-only program's: bpf_stats' own overhead \
         (its clock reads and counting around every run) is in both, so the difference is turn_xdp's own \
         cost; at low rates the relay's core sleeps between frames, so each run starts with cold caches, at \
         high rates its NAPI kthread runs frames back to back in polls of up to 64.\n"
    );
    let overflowed: Vec<&TimedStep> = live_cost
        .steps
        .iter()
        .filter(|step| {
            step.program == TimedProgram::PassOnly && step.share_run() < 1.0 - LOSS_THRESHOLD
        })
        .collect();
    for step in &overflowed {
        let _ = writeln!(
            md,
            "- The pass-only program, {} at {} pps offered, ran on {:.1} % of the frames ({} pps): the relay \
             namespace's stack behind it did not keep up, so its NAPI kthread polled full batches and the rest \
             found the veth ring full.",
            step.mode.label(),
            pps(step.offered_pps),
            step.share_run() * 100.0,
            pps(step.offered_pps * step.share_run()),
        );
    }
    for note in &live_cost.not_measured {
        let _ = writeln!(md, "- **Not measured:** {}", first_line(note));
    }
    if !overflowed.is_empty() || !live_cost.not_measured.is_empty() {
        let _ = writeln!(md);
    }
}

/// The highest rate of live frames each server relayed with ≤ 0.1 % loss on the pinned
/// core, with its ratio to coturn's.
fn kernel_speed_table(per_core: &PerCoreReport, md: &mut String) {
    if per_core.kernel_speed.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "## Kernel speed: highest relayed rate at ≤ 0.1 % loss on one core\n\n\
         The same pinning and servers as above; the live-frames generator offers prebuilt frames ({} flows, \
         {} B payload) as fast as it can, then bisects the offered rate; *relayed* counts what reached the \
         peer's veth end (dropped there by XDP), *loss* = 1 − that / frames injected; *max* = the highest rate \
         a step actually offered (the generator falls short of its aim when its CPU is busy) with ≤ 0.1 % loss. \
         Every lost frame counts, wherever it was lost; the saturated step's are shown apart where the veth \
         counters tell: *ring full* = frames the relay's own receive ring (its client-side veth end, 256 \
         frames) had no room for, i.e. its NAPI kthread had not emptied it in time (the relay's loss); *sink \
         full* = relayed frames the peer's veth end had no room for. The sink is test rig: its NAPI kthread \
         runs SCHED_FIFO on CPU {}, so the generator sharing that CPU cannot delay it (before, it overflowed \
         behind a relay that kept up: 3 % of ours-xdp's frames at 100 k pps, 16 % at 400 k); what still \
         overflows there counts as loss all the same, as it stays 0 or nearly. *disturbed*: steps during which \
         the hypervisor (steal time) or other tasks took the relay's or the load's core for more than \
         {STEAL_LIMIT_MS} / {FOREIGN_LIMIT_MS} ms; such a step is tried again up to {LIVE_TRIES} times and the \
         least disturbed try kept: a stall of a few ms fills a 256-frame ring at any rate above some 50 k pps \
         whatever the server, so a disturbed step says more about the VM than about the relay, and a figure \
         whose steps were disturbed is a lower bound. *gen-bound*: no step lost more than 0.1 %, so the \
         generator, not the server, set the figure (a lower bound). Target: ours-xdp ≥ {KERNEL_SPEED_TARGET}× coturn.\n\n\
         | load | server | max pps @ ≤0.1 % loss | saturated: offered | relayed | loss | ring full | sink full | disturbed steps | × coturn | target |\n\
         |---|---|---|---|---|---|---|---|---|---|---|",
        per_core::FLOWS,
        per_core::PAYLOAD_LEN,
        per_core::LOAD_CPU,
    );
    for mode in [RelayMode::ChannelData, RelayMode::SendIndication] {
        let coturn = per_core
            .kernel_speed("coturn", mode)
            .filter(|coturn| coturn.max_rate.pps > 0.0);
        for row in per_core
            .kernel_speed
            .iter()
            .filter(|row| row.result.scenario.mode == mode)
        {
            let result = &row.result;
            let ratio = coturn.map(|coturn| result.max_rate.pps / coturn.max_rate.pps);
            let verdict = match (row.server.as_str(), ratio) {
                ("ours-xdp", Some(ratio)) if ratio >= KERNEL_SPEED_TARGET => {
                    format!("≥ {KERNEL_SPEED_TARGET}: met")
                }
                ("ours-xdp", Some(_)) if result.max_rate.generator_bound => {
                    format!("≥ {KERNEL_SPEED_TARGET}: not shown (gen-bound)")
                }
                ("ours-xdp", Some(_)) => format!("≥ {KERNEL_SPEED_TARGET}: **missed**"),
                ("ours-xdp", None) => format!("≥ {KERNEL_SPEED_TARGET}: no coturn figure"),
                _ => String::new(),
            };
            let saturated = &result.saturated;
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {:.2} % | {} | {} | {} of {} | {} | {verdict} |",
                mode.label(),
                row.server,
                max_rate(result),
                pps(saturated.offered_pps),
                pps(saturated.relayed_pps),
                saturated.loss_ratio * 100.0,
                saturated.relay_ring_full,
                saturated.sink_drops,
                result
                    .steps
                    .iter()
                    .filter(|step| step.disturbance.is_some_and(|d| d.disturbed()))
                    .count(),
                result.steps.len(),
                ratio.map_or("–".to_owned(), |r| format!("{r:.2}")),
            );
        }
    }
    let _ = writeln!(md);
    if let Some(latency) = &per_core.wake_latency {
        wake_latency_bullet(latency, md);
    }
}

/// How long the relay's core took to wake, and what that does to its ring.
pub(super) fn wake_latency_bullet(wake: &WakeLatency, md: &mut String) {
    let latency = &wake.latency;
    let _ = writeln!(
        md,
        "- How long the relay's core takes to wake, measured before the servers ran: a thread pinned to CPU {} \
         waited on a channel, and one on CPU {} sent it the time every {WAKE_INTERVAL_US} µs ({} wake-ups; \
         the core sleeps in between). It ran {:.0} µs after the send at the median, {:.0} µs at p99, \
         {:.0} µs at p99.9, {:.0} µs at most; {} wake-ups took longer than the {RING_FILL_AT_1M_PPS_US} µs in which \
         {VETH_RING_FRAMES} frames arrive at 1 M pps. The relay's NAPI kthread, having emptied its ring, \
         sleeps and waits as long for the frame that wakes it while the generator goes on filling the ring: \
         a wake-up longer than {VETH_RING_FRAMES} frames' time at the offered rate overflows it whatever the \
         server. Above its capacity a relay never sleeps, which is why the saturated step can relay more than \
         the highest rate at ≤ 0.1 % loss. Steal time, counted in 10 ms ticks, shows none of this.\n",
        wake.cpu,
        wake.from_cpu,
        latency.samples,
        latency.p50_us,
        latency.p99_us,
        latency.p999_us,
        latency.max_us,
        wake.ring_fills_at_1m_pps,
    );
}
