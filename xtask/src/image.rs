//! `cargo xtask image`: the DaemonSet's image. The binaries are linked statically against
//! glibc (the only C library this machine's rustup can target), so the image needs no base:
//! `FROM scratch` plus `sluiced`, `sluice` and `sluicectl` (`deploy/Containerfile`), built by
//! podman from local content only.

use std::{path::Path, process::Command};

use anyhow::{Context, Result, ensure};

use crate::sh;

const TARGET: &str = "x86_64-unknown-linux-gnu";
const BINARIES: [&str; 3] = ["sluiced", "sluice", "sluicectl"];

pub fn run(tag: &str, archive: Option<&Path>) -> Result<()> {
    let root = sh::root();
    // An explicit --target keeps the flag off build scripts and proc macros, and the
    // target-scoped variable keeps it off the eBPF build that sluiced's build.rs runs.
    sh::run(
        sh::cargo()
            .args(["build", "--release", "--target", TARGET])
            .args(BINARIES.iter().flat_map(|b| ["--bin", b]))
            .env(
                "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
                "-C target-feature=+crt-static",
            ),
    )?;
    let context = root.join("target/image");
    let _ = std::fs::remove_dir_all(&context);
    std::fs::create_dir_all(&context)?;
    for b in BINARIES {
        let built = root.join("target").join(TARGET).join("release").join(b);
        let out = Command::new("file").arg(&built).output();
        if let Ok(o) = out {
            let desc = String::from_utf8_lossy(&o.stdout);
            ensure!(
                desc.contains("statically linked") || desc.contains("static-pie"),
                "{b} is not statically linked: {desc}"
            );
        }
        std::fs::copy(&built, context.join(b)).with_context(|| format!("copy {}", built.display()))?;
        // Symbols are for debugging on the build machine, not for every node.
        sh::run(Command::new("strip").arg(context.join(b)))?;
    }
    std::fs::copy(root.join("deploy/Containerfile"), context.join("Containerfile"))?;
    sh::run(
        Command::new("podman")
            .args(["build", "--pull=never", "--tag", tag, "--file"])
            .arg(context.join("Containerfile"))
            .arg(&context),
    )?;
    let size = Command::new("podman")
        .args(["image", "inspect", "--format", "{{.Size}}", tag])
        .output()?;
    let bytes: u64 = String::from_utf8_lossy(&size.stdout).trim().parse().unwrap_or(0);
    // A smoke test of the image's content: the daemon runs and knows its flags. runc: Debian
    // 12's default crun 1.8 refuses cgroup v1/hybrid hosts. Explicit ulimits: podman asks for
    // more than a runtime without CAP_SYS_RESOURCE may set where the hard limits are lower.
    let mut run = Command::new("podman");
    run.args(["run", "--rm", "--runtime", "runc", "--network=none"]);
    if let Some(n) = hard_limit(libc::RLIMIT_NOFILE) {
        run.arg(format!("--ulimit=nofile={n}:{n}"));
    }
    if let Some(n) = hard_limit(libc::RLIMIT_NPROC) {
        // Podman caps its own process limit at pid_max/threads-max.
        let n = ["/proc/sys/kernel/pid_max", "/proc/sys/kernel/threads-max"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok()?.trim().parse::<u64>().ok())
            .fold(n, u64::min);
        run.arg(format!("--ulimit=nproc={n}:{n}"));
    }
    sh::run(run.args([tag, "--help"])).context("the image's sluiced does not run")?;
    if let Some(path) = archive {
        let _ = std::fs::remove_file(path);
        sh::run(
            Command::new("podman")
                .args(["save", "--format", "oci-archive", "--output"])
                .arg(path)
                .arg(tag),
        )?;
    }
    println!(
        "image {tag}: {:.1} MiB ({} static binaries, FROM scratch)",
        bytes as f64 / (1 << 20) as f64,
        BINARIES.len()
    );
    Ok(())
}

/// This process's hard limit for `resource` (None when unlimited or unknown).
fn hard_limit(resource: libc::__rlimit_resource_t) -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointer to a rlimit.
    let rc = unsafe { libc::getrlimit(resource, &mut r) };
    (rc == 0 && r.rlim_max != libc::RLIM_INFINITY).then_some(r.rlim_max)
}
