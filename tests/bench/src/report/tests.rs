use super::*;
use crate::disturbance::WakeLatency;
use crate::live_cost::{LiveCostByRate, Runs, TimedProgram, TimedStep};
use crate::load::RelayMode;
use crate::per_core::{
    coalesced_name, FloorProgram, FloorRow, Generator, PerCoreReport, PerCoreRow,
};

fn row(server: &str, generator: Generator, process_ns: f64, napi_ns: f64) -> PerCoreRow {
    PerCoreRow {
        server: server.to_owned(),
        mode: RelayMode::ChannelData,
        generator,
        target_pps: 40_000.0,
        offered_pps: 40_000.0,
        relayed_pps: 40_000.0,
        loss_ratio: 0.0,
        process_ns,
        napi_ns,
        packets_per_process_run: 10.0,
        packets_per_napi_run: 4.0,
    }
}

fn floor(program: FloorProgram, generator: Generator, napi_ns: f64) -> FloorRow {
    FloorRow {
        program,
        generator,
        target_pps: 40_000.0,
        offered_pps: 40_000.0,
        napi_ns,
        packets_per_napi_run: 4.0,
        delivered_ratio: (program == FloorProgram::Redirect).then_some(0.999),
    }
}

#[test]
fn per_core_rows_carry_their_ratio_to_coturn_and_verdict() {
    use FloorProgram::{Drop, Redirect};
    use Generator::{LiveFrames, Sockets};
    let report = PerCoreReport {
        rates: vec![40_000.0],
        step_seconds: 2.0,
        rows: vec![
            row("coturn", Sockets, 8_000.0, 2_000.0),
            row("ours-userspace", Sockets, 4_000.0, 2_000.0),
            row(&coalesced_name(), Sockets, 3_000.0, 1_500.0),
            row("ours-xdp", Sockets, 0.0, 1_500.0),
            row("coturn", LiveFrames, 8_000.0, 1_000.0),
            row("ours-xdp", LiveFrames, 0.0, 1_000.0),
        ],
        floor: vec![
            floor(Drop, Sockets, 1_000.0),
            floor(Drop, LiveFrames, 400.0),
            floor(Redirect, Sockets, 1_200.0),
            floor(Redirect, LiveFrames, 700.0),
        ],
        kernel_speed: Vec::new(),
        live_cost: LiveCostByRate::default(),
        wake_latency: None,
        errors: Vec::new(),
    };
    let mut md = String::new();
    per_core_section(&report, &mut md);
    let line = |server: &str, generator: Generator| {
        md.lines()
            .find(|line| {
                line.contains(&format!("| {} |", generator.label()))
                    && line.contains(&format!("| {server} |"))
            })
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        line("coturn", Sockets).contains("| **10.00** | 1.00 |  |"),
        "{md}"
    );
    assert!(
        line("ours-userspace", Sockets).contains("| **6.00** | 0.60 | ≤ 0.50: **missed** |"),
        "{md}"
    );
    assert!(
        line(&coalesced_name(), Sockets).contains("| **4.50** | 0.45 | ≤ 0.50: met |"),
        "{md}"
    );
    assert!(
        line("ours-xdp", Sockets).contains("| **1.50** | 0.15 | ≤ 0.20: met |"),
        "{md}"
    );
    assert!(
        line("ours-xdp", LiveFrames).contains("| **1.00** | 0.11 | ≤ 0.10: **missed** |"),
        "{md}"
    );
    assert!(
        md.contains("4.0 frames per NAPI run, so 4.0 µs per run"),
        "{md}"
    );
    assert!(
        md.contains("0.50 µs (33 %) of the skb figure is veth turning skbs into XDP frames (the drop-only floors differ by 0.60 µs)."),
        "{md}"
    );
    assert!(
        md.contains("- Redirect-only XDP program on the same veth end (every UDP frame redirected"),
        "{md}"
    );
    assert!(
        md.contains("ChannelData from live frames (XDP) at 40.0 k pps: 0.70 µs of NAPI CPU per frame, 4.0 frames per NAPI run, so 2.8 µs per run; 99.90 % of the frames sent reached the peer's veth end"),
        "{md}"
    );
    assert!(
        md.contains("Fed XDP frames, its NAPI CPU over the drop-only floor: +0.60 µs, of which +0.30 µs the redirect into the peer's veth"),
        "{md}"
    );
    assert!(
        md.contains("Fed skbs, its NAPI CPU over the drop-only floor: +0.50 µs, of which +0.20 µs the redirect"),
        "{md}"
    );
    assert!(
        md.contains("(redirect-only − drop-only floor), and +0.30 µs the relay program's own work (ours-xdp − redirect-only floor)."),
        "{md}"
    );
}

fn timed(program: TimedProgram, mode: RelayMode, rate: f64, ns_per_run: f64) -> TimedStep {
    TimedStep {
        program,
        mode,
        target_pps: rate,
        offered_pps: rate,
        sent: rate as u64,
        relayed_pps: if program == TimedProgram::Relay {
            rate * 0.999
        } else {
            0.0
        },
        loss_ratio: if program == TimedProgram::Relay {
            0.001
        } else {
            1.0
        },
        disturbed: false,
        runs: Runs {
            ns_per_run,
            count: if program == TimedProgram::PassOnly && rate > 100_000.0 {
                rate as u64 / 2
            } else {
                rate as u64
            },
        },
    }
}

#[test]
fn live_cost_rows_carry_the_difference_to_the_pass_only_program_and_verdict() {
    use RelayMode::{ChannelData, SendIndication};
    use TimedProgram::{PassOnly, Relay};
    let live_cost = LiveCostByRate {
        rates: vec![40_000.0, 400_000.0, 1_000_000.0],
        steps: vec![
            timed(Relay, ChannelData, 40_000.0, 420.0),
            timed(Relay, ChannelData, 400_000.0, 180.0),
            timed(Relay, SendIndication, 40_000.0, 500.0),
            timed(PassOnly, ChannelData, 40_000.0, 60.0),
            timed(PassOnly, ChannelData, 400_000.0, 50.0),
        ],
        not_measured: vec![
            "turn_xdp, ChannelData, at 1000000 pps: skipped, the generator offered only 800000 pps"
                .to_owned(),
        ],
    };
    assert_eq!(live_cost.program_ns(ChannelData, 400_000.0), Some(130.0));
    assert_eq!(live_cost.program_ns(SendIndication, 40_000.0), None);
    let report = PerCoreReport {
        rates: vec![40_000.0],
        step_seconds: 1.0,
        live_cost,
        ..PerCoreReport::default()
    };
    let mut md = String::new();
    per_core_section(&report, &mut md);
    assert!(
        md.contains("| ChannelData | 40.0 k | 40.0 k | 0.10 % | 420.0 | 60.0 | **360.0** | ≤ 150: **missed** |"),
        "{md}"
    );
    assert!(
        md.contains(
            "| ChannelData | 400.0 k | 399.6 k | 0.10 % | 180.0 | 50.0 | **130.0** | ≤ 150: met |"
        ),
        "{md}"
    );
    assert!(
        md.contains("| Send/Data | 40.0 k | 40.0 k | 0.10 % | 500.0 | – | – | no live target |"),
        "{md}"
    );
    assert!(
        !md.contains("| ChannelData | 1.00 M"),
        "a rate the generator did not reach has no row: {md}"
    );
    assert!(
        md.contains("- The pass-only program, ChannelData at 400.0 k pps offered, ran on 50.0 % of the frames (200.0 k pps): the relay namespace's stack"),
        "{md}"
    );
    assert!(
        !md.contains("- The pass-only program, ChannelData at 40.0 k"),
        "{md}"
    );
    assert!(
        md.contains("- **Not measured:** turn_xdp, ChannelData, at 1000000 pps: skipped, the generator offered only 800000 pps"),
        "{md}"
    );
}

#[test]
fn wake_latency_says_how_many_wake_ups_would_fill_the_ring_at_one_million_pps() {
    let wake = WakeLatency {
        cpu: 1,
        from_cpu: 0,
        latency: Percentiles {
            samples: 9_800,
            p50_us: 41.2,
            p99_us: 180.4,
            p999_us: 1_210.0,
            max_us: 2_538.0,
        },
        ring_fills_at_1m_pps: 28,
    };
    let mut md = String::new();
    wake_latency_bullet(&wake, &mut md);
    assert!(
        md.contains("pinned to CPU 1 waited on a channel, and one on CPU 0 sent it the time every 100 µs (9800 wake-ups;"),
        "{md}"
    );
    assert!(
        md.contains("41 µs after the send at the median, 180 µs at p99, 1210 µs at p99.9, 2538 µs at most; 28 wake-ups took longer than the 256 µs"),
        "{md}"
    );
}
