//! Builds the XDP program (`../turn-ebpf`) for `bpfel-unknown-none` with aya-build and
//! leaves the object at `$OUT_DIR/turn-ebpf`, which `src/bpf` embeds.
//!
//! Needs the `nightly` toolchain with `rust-src` and `bpf-linker` on PATH (installed by
//! `cargo xtask setup`). `AYA_BUILD_SKIP=1` skips the build (the crate then fails to
//! compile, since the object is embedded); used only by tooling that never links.

use std::path::PathBuf;

use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
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
