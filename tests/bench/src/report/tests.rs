use super::*;
use crate::per_core::{FloorRow, PerCoreRow};

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

fn floor(generator: Generator, napi_ns: f64) -> FloorRow {
    FloorRow {
        generator,
        target_pps: 40_000.0,
        offered_pps: 40_000.0,
        napi_ns,
        packets_per_napi_run: 4.0,
    }
}

#[test]
fn per_core_rows_carry_their_ratio_to_coturn_and_verdict() {
    use Generator::{LiveFrames, Sockets};
    let report = PerCoreReport {
        rates: vec![40_000.0],
        step_seconds: 2.0,
        rows: vec![
            row("coturn", Sockets, 8_000.0, 2_000.0),
            row("ours-userspace", Sockets, 4_000.0, 2_000.0),
            row("ours-xdp", Sockets, 0.0, 1_500.0),
            row("coturn", LiveFrames, 8_000.0, 1_000.0),
            row("ours-xdp", LiveFrames, 0.0, 1_000.0),
        ],
        floor: vec![floor(Sockets, 1_000.0), floor(LiveFrames, 400.0)],
        kernel_speed: Vec::new(),
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
        md.contains("0.50 µs (33 %) of the skb figure is veth turning skbs into XDP frames (the drop-only floors differ by 0.60 µs); the program's own work over the XDP-frame floor: +0.60 µs."),
        "{md}"
    );
}
