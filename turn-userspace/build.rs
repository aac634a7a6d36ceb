//! Builds the XDP program (`../turn-ebpf`) for `bpfel-unknown-none` with aya-build and
//! leaves the object at `$OUT_DIR/turn-ebpf`, which `src/bpf` embeds.
//!
//! Needs the `nightly` toolchain with `rust-src` and `bpf-linker` on PATH (installed by
//! `cargo xtask setup`). `AYA_BUILD_SKIP=1` skips the build (the crate then fails to
//! compile, since the object is embedded); used only by tooling that never links.
//!
//! aya-build relays every line of the nested cargo build as a `cargo:warning`, so every
//! host build would show some 30 "warning: Compiling …" lines. This script therefore runs
//! itself a second time to do the build and filters what that child prints: cargo's
//! progress lines are dropped when the build succeeds, real warnings stay warnings, and a
//! failed build shows the whole nested output.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{anyhow, bail, Context as _};

/// Set in the child that really builds the program.
const CHILD: &str = "TURN_USERSPACE_EBPF_BUILD_CHILD";
/// The prefix under which aya-build relays the nested build's output.
const WARNING: &str = "cargo:warning=";

fn main() -> anyhow::Result<()> {
    if std::env::var_os(CHILD).is_some() {
        return build_ebpf();
    }
    let script = std::env::current_exe().context("locating the build script")?;
    let output = Command::new(&script)
        .env(CHILD, "1")
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut nested = Vec::new();
    for line in stdout.lines() {
        match line.strip_prefix(WARNING) {
            Some(text) => nested.push(text),
            // cargo:rerun-if-* directives.
            None => println!("{line}"),
        }
    }
    if !output.status.success() {
        for line in &nested {
            eprintln!("{line}");
        }
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
        bail!("building the XDP program failed: see the nested build output above");
    }
    for line in nested.into_iter().filter(|line| !is_progress(line)) {
        println!("{WARNING}{line}");
    }
    Ok(())
}

/// A line of cargo's progress ("   Compiling core v0.0.0", "    Finished `release` …": a
/// capitalised verb right-aligned in 12 columns) or a blank line.
fn is_progress(line: &str) -> bool {
    if line.trim().is_empty() {
        return true;
    }
    let Some((verb, rest)) = line.split_at_checked(12) else {
        return false;
    };
    let verb = verb.trim_start();
    rest.starts_with(' ')
        && verb.chars().next().is_some_and(char::is_uppercase)
        && verb.chars().all(char::is_alphabetic)
}

fn build_ebpf() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR")
            .ok_or_else(|| anyhow!("CARGO_MANIFEST_DIR not set"))?,
    );
    let ebpf_dir = manifest_dir
        .parent()
        .ok_or_else(|| anyhow!("turn-userspace has no parent directory"))?
        .join("turn-ebpf");
    let common_dir = ebpf_dir.with_file_name("turn-common");
    // turn-ebpf is its own workspace (excluded from the host one): aya-build runs
    // `cargo build --package turn-ebpf` in the current directory, so run it from there.
    std::env::set_current_dir(&ebpf_dir)
        .with_context(|| format!("entering {}", ebpf_dir.display()))?;
    println!("cargo:rerun-if-changed={}", common_dir.display());
    let root_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "turn-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .context(
        "building the XDP program (needs nightly + rust-src and bpf-linker: `cargo xtask setup`)",
    )
}
