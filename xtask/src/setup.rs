//! `cargo xtask setup`: installs what is missing on a fresh Debian 12 machine.
//!
//! Each step first checks whether its work is already done, so a second run is a quick
//! no-op. Steps print their outcome and duration; the total time is printed at the end.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::command::{capture, cargo, run_checked, succeeds};

/// Debian packages the tests, benchmarks and XDP tooling need. coturn is installed for
/// its client tools (`turnutils_*`) and as a benchmark reference, never as a service.
const DEBIAN_PACKAGES: &[&str] = &[
    "coturn",
    "iproute2",
    "tcpdump",
    "tshark",
    "bpftool",
    "xdp-tools",
    "ethtool",
    "chromium",
    "chromium-driver",
    // nft: the load balancer namespace in front of several relays (tests/e2e).
    "nftables",
];

/// The nightly toolchain that builds the eBPF program (`-Z build-std=core`).
const NIGHTLY: &str = "nightly";

enum Outcome {
    AlreadyDone(String),
    Done(String),
}

struct Step {
    name: &'static str,
    action: fn(&Path) -> Result<Outcome>,
}

const STEPS: &[Step] = &[
    Step {
        name: "nightly toolchain with rust-src",
        action: ensure_nightly_rust_src,
    },
    Step {
        name: "bpf-linker (against the nightly's LLVM)",
        action: ensure_bpf_linker,
    },
    Step {
        name: "cargo-fuzz (cargo xtask fuzz)",
        action: ensure_cargo_fuzz,
    },
    Step {
        name: "Debian packages",
        action: ensure_debian_packages,
    },
    Step {
        name: "coturn system service stopped and disabled",
        action: ensure_coturn_service_off,
    },
    Step {
        name: "bpf filesystem at /sys/fs/bpf",
        action: ensure_bpffs_mounted,
    },
];

/// Runs every setup step in order, stopping at the first failure.
pub fn run(workspace: &Path) -> Result<()> {
    let started = Instant::now();
    println!("==> setup");
    for (index, step) in STEPS.iter().enumerate() {
        let step_started = Instant::now();
        println!("[{}/{}] {}", index + 1, STEPS.len(), step.name);
        let outcome =
            (step.action)(workspace).with_context(|| format!("setup step `{}`", step.name))?;
        let (label, detail) = match outcome {
            Outcome::AlreadyDone(detail) => ("ok, nothing to do", detail),
            Outcome::Done(detail) => ("done", detail),
        };
        println!("      {label}: {detail} ({:.1?})", step_started.elapsed());
    }
    println!("==> setup finished in {:.1?}", started.elapsed());
    Ok(())
}

fn ensure_nightly_rust_src(_: &Path) -> Result<Outcome> {
    let toolchains = capture(Command::new("rustup").args(["toolchain", "list"]))?;
    let mut actions = Vec::new();
    if !toolchains.lines().any(|line| line.starts_with(NIGHTLY)) {
        run_checked(Command::new("rustup").args([
            "toolchain",
            "install",
            NIGHTLY,
            "--profile",
            "minimal",
        ]))?;
        actions.push("installed the nightly toolchain");
    }
    let components = capture(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))?;
    if !components.lines().any(|line| line.trim() == "rust-src") {
        run_checked(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            NIGHTLY,
        ]))?;
        actions.push("added rust-src");
    }
    if actions.is_empty() {
        Ok(Outcome::AlreadyDone("nightly and rust-src present".into()))
    } else {
        Ok(Outcome::Done(actions.join(", ")))
    }
}

/// bpf-linker links against the nightly's own `libLLVM` (the LLVM that emits the eBPF
/// bitcode), so it is checked through `rustup run nightly`, which puts the nightly's lib
/// directory on the loader path.
fn ensure_bpf_linker(workspace: &Path) -> Result<Outcome> {
    if succeeds(Command::new("rustup").args(["run", NIGHTLY, "bpf-linker", "--version"])) {
        let version =
            capture(Command::new("rustup").args(["run", NIGHTLY, "bpf-linker", "--version"]))?;
        return Ok(Outcome::AlreadyDone(version.trim().to_owned()));
    }
    let sysroot = PathBuf::from(
        capture(Command::new("rustc").args([&format!("+{NIGHTLY}"), "--print", "sysroot"]))?.trim(),
    );
    let (llvm_library, llvm_major) = find_rust_llvm(&sysroot.join("lib"))?;
    let prefix = crate::target_dir(workspace).join("llvm-prefix");
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("creating {}", prefix_lib.display()))?;
    let link = prefix_lib.join("libLLVM.so");
    if fs::symlink_metadata(&link).is_ok() {
        fs::remove_file(&link).with_context(|| format!("replacing {}", link.display()))?;
    }
    symlink(&llvm_library, &link)
        .with_context(|| format!("linking {} -> {}", link.display(), llvm_library.display()))?;
    println!(
        "      LLVM {llvm_major} from {}; building bpf-linker (takes a few minutes)",
        llvm_library.display()
    );
    run_checked(
        cargo()
            .env("LLVM_PREFIX", &prefix)
            .args([
                "install",
                "bpf-linker",
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{llvm_major}")),
    )?;
    Ok(Outcome::Done(format!(
        "installed bpf-linker for LLVM {llvm_major}"
    )))
}

/// cargo-fuzz, which builds and runs the libFuzzer targets of `tests/fuzz` with the
/// nightly toolchain.
fn ensure_cargo_fuzz(_: &Path) -> Result<Outcome> {
    if let Ok(version) = capture(cargo().args(["fuzz", "--version"])) {
        return Ok(Outcome::AlreadyDone(version.trim().to_owned()));
    }
    println!("      building cargo-fuzz (takes a few minutes)");
    run_checked(cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    Ok(Outcome::Done("installed cargo-fuzz".into()))
}

/// The nightly's `libLLVM.so.<major>.<minor>-rust-<version>` and its LLVM major version.
fn find_rust_llvm(sysroot_lib: &Path) -> Result<(PathBuf, u32)> {
    let entries =
        fs::read_dir(sysroot_lib).with_context(|| format!("listing {}", sysroot_lib.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", sysroot_lib.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(major) = llvm_major_from_file_name(&name) {
            return Ok((entry.path(), major));
        }
    }
    bail!(
        "no libLLVM.so.*-rust-* in {} (is the nightly toolchain complete?)",
        sysroot_lib.display()
    )
}

/// `libLLVM.so.22.1-rust-1.97.0-nightly` → 22.
fn llvm_major_from_file_name(name: &str) -> Option<u32> {
    let version = name.strip_prefix("libLLVM.so.")?;
    if !version.contains("-rust-") {
        return None;
    }
    let major: String = version.chars().take_while(char::is_ascii_digit).collect();
    major.parse().ok()
}

fn is_installed(package: &str) -> bool {
    capture(Command::new("dpkg-query").args(["-W", "-f=${db:Status-Status}", package]))
        .is_ok_and(|status| status.trim() == "installed")
}

fn ensure_debian_packages(_: &Path) -> Result<Outcome> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|package| !is_installed(package))
        .collect();
    if missing.is_empty() {
        return Ok(Outcome::AlreadyDone(format!(
            "installed: {}",
            DEBIAN_PACKAGES.join(" ")
        )));
    }
    println!("      missing: {}", missing.join(" "));
    run_checked(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .arg("update"),
    )?;
    for package in &missing {
        let policy = capture(Command::new("apt-cache").args(["policy", package]))?;
        if !policy.contains("Candidate:") || policy.contains("Candidate: (none)") {
            bail!("package {package} is not available from the configured apt sources");
        }
    }
    run_checked(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing),
    )?;
    Ok(Outcome::Done(format!("installed {}", missing.join(" "))))
}

/// Debian starts and enables coturn's `turnserver` on install; it would hold port 3478.
fn ensure_coturn_service_off(_: &Path) -> Result<Outcome> {
    let mut actions = Vec::new();
    let has_systemctl = succeeds(Command::new("systemctl").arg("--version"));
    let systemd_running = Path::new("/run/systemd/system").exists();
    if has_systemctl {
        let enabled = capture(Command::new("systemctl").args(["is-enabled", "coturn"]))
            .is_ok_and(|state| state.trim() == "enabled");
        if enabled {
            run_checked(Command::new("systemctl").args(["disable", "coturn"]))?;
            actions.push("disabled");
        }
    }
    let running = if systemd_running {
        succeeds(Command::new("systemctl").args(["is-active", "--quiet", "coturn"]))
    } else {
        succeeds(Command::new("service").args(["coturn", "status"]))
    };
    if running {
        if systemd_running {
            run_checked(Command::new("systemctl").args(["stop", "coturn"]))?;
        } else {
            run_checked(Command::new("service").args(["coturn", "stop"]))?;
        }
        actions.push("stopped");
    }
    if actions.is_empty() {
        Ok(Outcome::AlreadyDone("not running, not enabled".into()))
    } else {
        Ok(Outcome::Done(actions.join(" and ")))
    }
}

fn ensure_bpffs_mounted(_: &Path) -> Result<Outcome> {
    let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    let mounted = mounts.lines().any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        fields.next() == Some("/sys/fs/bpf") && fields.next() == Some("bpf")
    });
    if mounted {
        return Ok(Outcome::AlreadyDone("mounted".into()));
    }
    run_checked(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))?;
    Ok(Outcome::Done("mounted".into()))
}

#[cfg(test)]
mod tests {
    use super::llvm_major_from_file_name;

    #[test]
    fn llvm_major_is_read_from_the_rust_llvm_library_name() {
        assert_eq!(
            llvm_major_from_file_name("libLLVM.so.22.1-rust-1.97.0-nightly"),
            Some(22)
        );
        assert_eq!(
            llvm_major_from_file_name("libLLVM-22-rust-1.97.0-nightly.so"),
            None
        );
        assert_eq!(llvm_major_from_file_name("librustc_driver-b5a9.so"), None);
    }
}
