//! Writes every fuzz target's seeds into `<directory>/<target>/seed-<n>`, where
//! `cargo xtask fuzz` hands them to libFuzzer as the start of its corpus.

use std::path::PathBuf;

use anyhow::{Context, Result};

fn main() -> Result<()> {
    let directory = PathBuf::from(
        std::env::args_os()
            .nth(1)
            .context("usage: turn-fuzz-seeds <corpus directory>")?,
    );
    for target in turn_fuzz::TARGETS {
        let target_directory = directory.join(target);
        std::fs::create_dir_all(&target_directory)
            .with_context(|| format!("creating {}", target_directory.display()))?;
        for (index, seed) in turn_fuzz::seeds(target).iter().enumerate() {
            let path = target_directory.join(format!("seed-{index}"));
            std::fs::write(&path, seed).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}
