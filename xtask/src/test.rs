//! `cargo xtask test`: the whole suite, as CI runs it.

use anyhow::{Result, ensure};

use crate::sh;

pub fn run(filter: Option<&str>, integration_only: bool) -> Result<()> {
    let started = std::time::Instant::now();
    if !integration_only {
        sh::run(sh::cargo().args(["fmt", "--all", "--", "--check"]))?;
        // The eBPF crate is outside the workspace: check its formatting directly.
        sh::run(
            std::process::Command::new("rustfmt")
                .current_dir(sh::root())
                .args(["--check", "--edition", "2024", "ebpf/sluice-ebpf/src/main.rs"]),
        )?;
        sh::run(sh::cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
        sh::run(sh::cargo().args(["test", "--workspace", "--exclude", "sluice-tests"]))?;
        // The DaemonSet manifests, offline, against the Kubernetes schemas.
        sh::run(
            std::process::Command::new("bash")
                .current_dir(sh::root())
                .arg("deploy/kubernetes/validate.sh"),
        )?;
    }
    crate::build_release()?;
    ensure!(
        sh::is_root(),
        "the integration tests create network namespaces and load eBPF programs: run `cargo xtask test` as root"
    );
    let bins = sh::root().join("target/release");
    let mut cmd = sh::cargo();
    cmd.args(["test", "--release", "-p", "sluice-tests", "--"]).args([
        "--test-threads",
        "1",
        "--include-ignored",
    ]);
    if let Some(f) = filter {
        cmd.arg(f);
    }
    cmd.env("SLUICE_BIN_DIR", &bins);
    sh::run(&mut cmd)?;
    eprintln!(
        "xtask test: all passed in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
