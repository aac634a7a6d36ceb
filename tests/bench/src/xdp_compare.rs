//! `turn-bench xdp-compare --against OTHER`: a before/after table of the XDP program's
//! cost per path. This binary's `xdp-timing` table and another build's (`OTHER`, a
//! turn-bench of an earlier commit, which embeds that commit's program) are run in
//! turn, `--pairs` times each, so that both see the same machine: single TestRun
//! figures move by 20–50 ns between rounds an hour apart on a shared VM, more than most
//! changes to compare. Per row: the median own cost (row − its baseline) of each build
//! with its range, and the median of the paired differences.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use turn_testkit::process::run_bounded;

use crate::xdp_timing::median;

/// The longest one `xdp-timing` table may take.
const TIMING_LIMIT: Duration = Duration::from_secs(300);

/// One `xdp-timing` table: its rows in order, ns per packet.
type Table = Vec<(String, f64)>;

/// Runs the comparison and prints its Markdown table.
pub fn run(against: &Path, pairs: u32) -> Result<()> {
    let this = std::env::current_exe().context("this binary's path")?;
    let mut before = Vec::new();
    let mut after = Vec::new();
    for pair in 0..pairs {
        eprintln!("turn-bench: xdp-compare: pair {} of {pairs}", pair + 1);
        before.push(own_costs(&timing_table(against)?)?);
        after.push(own_costs(&timing_table(&this)?)?);
    }
    print!("{}", compare(&before, &after));
    Ok(())
}

/// The table `binary xdp-timing` prints (which takes some 15 s).
fn timing_table(binary: &Path) -> Result<Table> {
    let finished = run_bounded(Command::new(binary).arg("xdp-timing"), TIMING_LIMIT)?;
    if !finished.succeeded() {
        bail!(
            "{} xdp-timing failed or ran past {TIMING_LIMIT:?}: {}",
            binary.display(),
            finished.output().trim()
        );
    }
    parse_table(&finished.stdout)
}

/// The rows of a `| path | ns/packet |` Markdown table.
fn parse_table(text: &str) -> Result<Table> {
    let rows: Table = text
        .lines()
        .filter_map(|line| {
            let mut cells = line.trim().trim_matches('|').split('|').map(str::trim);
            let (path, ns) = (cells.next()?, cells.next()?);
            Some((path.to_owned(), ns.parse().ok()?))
        })
        .collect();
    if rows.is_empty() {
        bail!("no rows in the xdp-timing table:\n{text}");
    }
    Ok(rows)
}

/// Each row less its baseline (`baseline_pass`, or `baseline_pass_repeated` for the
/// `_repeated` rows), the baselines left out.
fn own_costs(table: &Table) -> Result<Table> {
    let baseline = |name: &str| {
        table
            .iter()
            .find(|(path, _)| path == name)
            .map(|(_, ns)| *ns)
            .with_context(|| format!("no {name} row"))
    };
    let (single, repeated) = (
        baseline("baseline_pass")?,
        baseline("baseline_pass_repeated")?,
    );
    Ok(table
        .iter()
        .filter(|(path, _)| !path.starts_with("baseline_pass"))
        .map(|(path, ns)| {
            let base = if path.ends_with("_repeated") {
                repeated
            } else {
                single
            };
            (path.clone(), ns - base)
        })
        .collect())
}

/// The Markdown before/after table of the rows of `after` (the rows `before` lacks show
/// "–").
fn compare(before: &[Table], after: &[Table]) -> String {
    let mut table = String::from(
        "| path | before ns (range) | after ns (range) | after − before, median of pairs |\n\
         |---|---|---|---|\n",
    );
    let Some(rows) = after.first() else {
        return table;
    };
    let figures = |tables: &[Table], path: &str| -> Vec<f64> {
        tables
            .iter()
            .filter_map(|rows| rows.iter().find(|(row, _)| row == path).map(|(_, ns)| *ns))
            .collect()
    };
    let summary = |figures: &mut Vec<f64>| {
        let median = median(figures);
        let (low, high) = (figures[0], figures[figures.len() - 1]);
        format!("{median:.0} ({low:.0}–{high:.0})")
    };
    for (path, _) in rows {
        let mut after_ns = figures(after, path);
        let mut before_ns = figures(before, path);
        let (before_cell, difference) = if before_ns.len() == after_ns.len() {
            let mut differences: Vec<f64> = after_ns
                .iter()
                .zip(&before_ns)
                .map(|(a, b)| a - b)
                .collect();
            (
                summary(&mut before_ns),
                format!("{:+.0}", median(&mut differences)),
            )
        } else {
            ("–".to_owned(), String::new())
        };
        table.push_str(&format!(
            "| {path} | {before_cell} | {} | {difference} |\n",
            summary(&mut after_ns)
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: &[(&str, f64)]) -> Table {
        rows.iter()
            .map(|(path, ns)| (path.to_string(), *ns))
            .collect()
    }

    #[test]
    fn rows_are_read_less_their_baseline() {
        let text = "| path | ns/packet |\n|---|---|\n| baseline_pass | 38.0 |\n\
                    | channel_data_to_peer_v4 | 78.0 |\n| baseline_pass_repeated | 5.0 |\n\
                    | pass_unknown_flow_repeated | 19.0 |\n";
        let rows = own_costs(&parse_table(text).expect("rows")).expect("baselines");
        assert_eq!(
            rows,
            table(&[
                ("channel_data_to_peer_v4", 40.0),
                ("pass_unknown_flow_repeated", 14.0)
            ])
        );
        assert!(parse_table("nothing\n").is_err());
        assert!(own_costs(&table(&[("channel_data_to_peer_v4", 1.0)])).is_err());
    }

    #[test]
    fn each_row_has_both_medians_and_the_median_paired_difference() {
        let before = [
            table(&[("a", 150.0)]),
            table(&[("a", 146.0)]),
            table(&[("a", 152.0)]),
        ];
        let after = [
            table(&[("a", 40.0), ("new", 42.0)]),
            table(&[("a", 38.0), ("new", 41.0)]),
            table(&[("a", 39.0), ("new", 43.0)]),
        ];
        let text = compare(&before, &after);
        assert!(
            text.contains("| a | 150 (146–152) | 39 (38–40) | -110 |"),
            "{text}"
        );
        assert!(text.contains("| new | – | 42 (41–43) |  |"), "{text}");
    }
}
