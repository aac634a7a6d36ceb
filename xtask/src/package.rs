//! `cargo xtask package`: the Debian package `target/package/turn-relay_<version>_<arch>.deb`,
//! built with `dpkg-deb` from the files under `config/`:
//!
//! | in the package                              | from                           |
//! |---------------------------------------------|--------------------------------|
//! | /usr/bin/turn-relay                          | the release build (debug info stripped) |
//! | /lib/systemd/system/turn-relay.service       | config/turn-relay.service      |
//! | /usr/lib/sysusers.d/turn-relay.conf          | config/turn-relay.sysusers     |
//! | /etc/turn-relay/turn-relay.toml (conffile)   | config/turn-relay.toml         |
//! | /usr/share/doc/turn-relay/README.md          | README.md                      |
//! | DEBIAN/{control,conffiles,postinst,prerm,postrm} | config/debian/             |

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::command::{capture, run_checked};
use crate::{release_build, target_dir};

/// Builds the package and returns its path.
pub fn run(workspace: &Path) -> Result<PathBuf> {
    let started = Instant::now();
    release_build(
        &["-p", "turn-userspace", "--bin", "turn-relay"],
        "turn-relay",
    )?;
    let version = capture(
        Command::new(target_dir(workspace).join("release").join("turn-relay")).arg("--version"),
    )?
    .trim()
    .trim_start_matches("turn-relay ")
    .to_owned();
    let architecture = capture(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_owned();
    let out = target_dir(workspace).join("package");
    let root = out.join(format!("turn-relay_{version}_{architecture}"));
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("clearing {}", root.display()))?;
    }
    let config = workspace.join("config");
    let binary = root.join("usr/bin/turn-relay");
    install(
        &target_dir(workspace).join("release/turn-relay"),
        &binary,
        0o755,
    )?;
    run_checked(Command::new("strip").arg("--strip-debug").arg(&binary))
        .context("stripping debug info from the packaged binary")?;
    install(
        &config.join("turn-relay.service"),
        &root.join("lib/systemd/system/turn-relay.service"),
        0o644,
    )?;
    install(
        &config.join("turn-relay.sysusers"),
        &root.join("usr/lib/sysusers.d/turn-relay.conf"),
        0o644,
    )?;
    install(
        &config.join("turn-relay.toml"),
        &root.join("etc/turn-relay/turn-relay.toml"),
        0o640,
    )?;
    install(
        &workspace.join("README.md"),
        &root.join("usr/share/doc/turn-relay/README.md"),
        0o644,
    )?;
    let control = fs::read_to_string(config.join("debian/control"))
        .context("reading config/debian/control")?
        .replace("@VERSION@", &version)
        .replace("@ARCHITECTURE@", &architecture);
    let debian = root.join("DEBIAN");
    fs::create_dir_all(&debian).with_context(|| format!("creating {}", debian.display()))?;
    fs::write(debian.join("control"), control).context("writing DEBIAN/control")?;
    install(
        &config.join("debian/conffiles"),
        &debian.join("conffiles"),
        0o644,
    )?;
    for script in ["postinst", "prerm", "postrm"] {
        install(
            &config.join("debian").join(script),
            &debian.join(script),
            0o755,
        )?;
    }
    let deb = out.join(format!("turn-relay_{version}_{architecture}.deb"));
    run_checked(
        Command::new("dpkg-deb")
            .args(["--build", "--root-owner-group"])
            .arg(&root)
            .arg(&deb),
    )
    .context("dpkg-deb --build")?;
    println!("==> package: {} ({:.1?})", deb.display(), started.elapsed());
    Ok(deb)
}

/// Copies `from` to `to` (creating its directory) with `mode`.
fn install(from: &Path, to: &Path, mode: u32) -> Result<()> {
    if let Some(directory) = to.parent() {
        fs::create_dir_all(directory)
            .with_context(|| format!("creating {}", directory.display()))?;
    }
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", to.display()))
}
