//! `cargo xtask quote-bench`: puts a benchmark's `results.md` into README.md's latest-run
//! block, so that the README quotes the run as it came out.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::command::capture;

/// The heading that opens the README's latest-run block; the block ends at the next
/// heading of the same level.
const BLOCK_HEADING: &str = "### Latest run: `cargo xtask bench --quick`";

/// Quotes `results` (a `results.md` of `turn-bench run`) in `workspace`'s README.md,
/// stamped with the run's start (UTC) and `commit` (default: the workspace's HEAD).
pub fn run(workspace: &Path, results: &Path, commit: Option<&str>) -> Result<()> {
    let results_text = std::fs::read_to_string(results)
        .with_context(|| format!("reading {}", results.display()))?;
    let commit = match commit {
        Some(commit) => commit.to_owned(),
        None => capture(Command::new("git").args(["rev-parse", "--short", "HEAD"]))?
            .trim()
            .to_owned(),
    };
    let started = started_unix(&results_text)
        .with_context(|| format!("no start time in {}", results.display()))?;
    let date = capture(Command::new("date").args([
        "-u",
        "-d",
        &format!("@{started}"),
        "+%Y-%m-%d %H:%M UTC",
    ]))?;
    let stamp = format!("{} (main at `{commit}`)", date.trim());
    let readme_path = workspace.join("README.md");
    let readme = std::fs::read_to_string(&readme_path)
        .with_context(|| format!("reading {}", readme_path.display()))?;
    let quoted = quote(&readme, &results_text, &stamp)?;
    std::fs::write(&readme_path, quoted)
        .with_context(|| format!("writing {}", readme_path.display()))?;
    println!("==> README.md quotes {} ({stamp})", results.display());
    Ok(())
}

/// The unix time `results.md` says the run started at.
fn started_unix(results: &str) -> Option<u64> {
    let (_, after) = results.split_once("Started at unix time ")?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// `readme` with its latest-run block's heading stamped with `stamp` and its body after
/// the block's introduction (the text before its first `#### ` heading) replaced by
/// `results` from its first section on, two heading levels down. Plots are left out:
/// they stay in the results directory.
fn quote(readme: &str, results: &str, stamp: &str) -> Result<String> {
    let lines: Vec<&str> = readme.lines().collect();
    let Some(start) = lines
        .iter()
        .position(|line| line.starts_with(BLOCK_HEADING))
    else {
        bail!("README.md has no heading starting with {BLOCK_HEADING:?}");
    };
    let end = lines[start + 1..]
        .iter()
        .position(|line| line.starts_with("### ") || line.starts_with("## "))
        .map_or(lines.len(), |offset| start + 1 + offset);
    let Some(body) = lines[start + 1..end]
        .iter()
        .position(|line| line.starts_with("#### "))
        .map(|offset| start + 1 + offset)
    else {
        bail!("README.md's latest-run block has no #### section to replace");
    };
    let results: Vec<&str> = results.lines().collect();
    let Some(first) = results.iter().position(|line| line.starts_with("## ")) else {
        bail!("the results have no ## section");
    };
    let mut quoted: Vec<String> = Vec::with_capacity(lines.len());
    quoted.extend(lines[..start].iter().map(|line| line.to_string()));
    quoted.push(format!("{BLOCK_HEADING}, {stamp}"));
    quoted.extend(lines[start + 1..body].iter().map(|line| line.to_string()));
    let mut section: Vec<String> = results[first..]
        .iter()
        .filter(|line| !line.starts_with("!["))
        .map(|line| {
            if line.starts_with('#') {
                format!("##{line}")
            } else {
                line.to_string()
            }
        })
        .collect();
    while section.last().is_some_and(|line| line.is_empty()) {
        section.pop();
    }
    quoted.extend(section);
    quoted.push(String::new());
    quoted.extend(lines[end..].iter().map(|line| line.to_string()));
    let mut text = quoted.join("\n");
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const README: &str = "# turn-relay\n\n## Benchmarks\n\n\
        ### Latest run: `cargo xtask bench --quick`, 2026-12-01 08:00 UTC (main at `aaaaaaa`)\n\n\
        The quick run that `cargo xtask test` ends with.\n\n\
        #### Old table\n\n| a |\n|---|\n| 1 |\n\n\
        ### Per-core comparison\n\nKept.\n";

    const RESULTS: &str = "# turn-bench results\n\n\
        Kernel 6.18, 2 CPUs, quick run. Started at unix time 1796207672.\n\n\
        ## New table\n\n| b |\n|---|\n| 2 |\n\n\
        ### A subsection\n\ntext\n\n![relayed vs offered](plot.svg)\n\n";

    #[test]
    fn the_block_quotes_the_results_two_levels_down_between_its_intro_and_the_next_section() {
        let quoted =
            quote(README, RESULTS, "2026-12-02 10:34 UTC (main at `bbbbbbb`)").expect("quoted");
        assert_eq!(
            quoted,
            "# turn-relay\n\n## Benchmarks\n\n\
             ### Latest run: `cargo xtask bench --quick`, 2026-12-02 10:34 UTC (main at `bbbbbbb`)\n\n\
             The quick run that `cargo xtask test` ends with.\n\n\
             #### New table\n\n| b |\n|---|\n| 2 |\n\n\
             ##### A subsection\n\ntext\n\n\
             ### Per-core comparison\n\nKept.\n"
        );
        assert_eq!(started_unix(RESULTS), Some(1_796_207_672));
    }

    #[test]
    fn a_readme_without_the_block_is_an_error() {
        assert!(quote("# turn-relay\n", RESULTS, "now").is_err());
        assert!(quote(README, "no sections\n", "now").is_err());
    }
}
