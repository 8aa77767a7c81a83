//! `cargo xtask setup`: make a Debian 12 machine able to build (and test) sluice.
//!
//! The eBPF programs are built by Debian's rustc/cargo 1.96 (`rustc-web`, `cargo-web`) with
//! the prebuilt `core` for bpfel (`libstd-rust-web-dev-bpf`): rustup here has no rust-src, so
//! `-Z build-std` is impossible. bpf-linker must be built against the same LLVM major as that
//! rustc. Everything is checked first and installed only when missing, so a second run takes
//! well under a second.

use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use crate::sh;

/// What the build needs.
const BUILD_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    "iproute2",
    "iputils-ping",
    "bpftool",
    "util-linux",
];

/// What the tests add: real runtimes and peers.
const TEST_PACKAGES: &[&str] = &[
    // tests/tests/podman.rs: podman 4.3 with its CNI backend as the runtime.
    "podman",
    // Its OCI runtime there: Debian's default crun 1.8 refuses cgroup v1/hybrid hosts.
    "runc",
    // The containers' rootfs (no registry): a static /bin/busybox and its applets.
    "busybox-static",
    // deploy/kubernetes/validate.sh: a venv for kubernetes-validate from PyPI.
    "python3-venv",
];

/// What `cargo xtask bench` adds: the traffic tools, the reference CNI plugins
/// (`/usr/lib/cni/{bridge,ptp,host-local,loopback}`) and iptables (legacy and nft) for the
/// iptables-based policy comparison. bpftool runs the eBPF programs with BPF_PROG_TEST_RUN.
const BENCH_PACKAGES: &[&str] = &[
    "iperf3",
    "sockperf",
    "containernetworking-plugins",
    "iptables",
    "bpftool",
    "iproute2",
    "util-linux",
];

/// What `cargo xtask image` adds: static glibc for the binaries, podman to build the image.
const IMAGE_PACKAGES: &[&str] = &["libc6-dev", "podman", "runc", "file"];

const BPF_LINKER_VERSION: &str = "0.13.0";
/// LLVM major of Debian's rustc 1.96; bpf-linker's feature must match it.
const LLVM_MAJOR: &str = "22";
const RUSTC_RELEASE: &str = "1.96.";

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Build,
    Test,
    /// The benchmark, building the release binaries itself (build toolchain + bench tools).
    Bench,
    /// The benchmark against prebuilt binaries (`SLUICE_BIN_DIR`): the bench tools only.
    BenchPrebuilt,
    /// `cargo xtask image`: the build toolchain, static glibc, podman.
    Image,
}

fn missing_packages(pkgs: &[&str]) -> Vec<String> {
    pkgs.iter()
        .filter(|p| {
            let out = Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output();
            !matches!(out, Ok(o) if String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .map(|p| p.to_string())
        .collect()
}

fn apt_install(pkgs: &[String]) -> Result<()> {
    if pkgs.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing {}", pkgs.join(" "));
    sh::run(
        Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    sh::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(pkgs)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn check_debian_rustc() -> Result<()> {
    let vv = sh::output(Command::new("/usr/bin/rustc").arg("-vV")).context("Debian's /usr/bin/rustc")?;
    let release = vv
        .lines()
        .find_map(|l| l.strip_prefix("release: "))
        .unwrap_or("?");
    let llvm = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .unwrap_or("?");
    ensure!(
        release.starts_with(RUSTC_RELEASE),
        "/usr/bin/rustc is {release}, sluice's eBPF build needs Debian's rustc-web {RUSTC_RELEASE}x (bookworm-security)"
    );
    ensure!(
        llvm.split('.').next() == Some(LLVM_MAJOR),
        "/usr/bin/rustc uses LLVM {llvm}; bpf-linker is built for LLVM {LLVM_MAJOR}: update LLVM_MAJOR in xtask/src/setup.rs and the llvm-NN-dev package together"
    );
    ensure!(
        std::path::Path::new("/usr/lib/rustlib/bpfel-unknown-none/lib").exists(),
        "the prebuilt core for bpfel-unknown-none is missing (package libstd-rust-web-dev-bpf)"
    );
    Ok(())
}

fn bpf_linker_ok() -> bool {
    let out = Command::new("bpf-linker").arg("--version").output();
    matches!(out, Ok(o) if String::from_utf8_lossy(&o.stdout).trim() == format!("bpf-linker {BPF_LINKER_VERSION}"))
}

fn install_bpf_linker() -> Result<()> {
    eprintln!("setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM {LLVM_MAJOR} (2-3 minutes)");
    sh::run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["install", "--locked"])
            .arg(format!("bpf-linker@{BPF_LINKER_VERSION}"))
            .args(["--no-default-features", "--features"])
            .arg(format!("llvm-{LLVM_MAJOR}"))
            .args(["--root", "/usr/local"])
            .env("LLVM_PREFIX", format!("/usr/lib/llvm-{LLVM_MAJOR}")),
    )?;
    ensure!(
        bpf_linker_ok(),
        "bpf-linker installed but `bpf-linker --version` is not {BPF_LINKER_VERSION}"
    );
    Ok(())
}

fn ensure_bpffs() -> Result<()> {
    if !sh::quiet(Command::new("mountpoint").args(["-q", "/sys/fs/bpf"])) {
        sh::run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))?;
    }
    Ok(())
}

pub fn run(profile: Profile) -> Result<()> {
    if !std::path::Path::new("/etc/debian_version").exists() {
        bail!("sluice's setup expects Debian 12 (bookworm): /etc/debian_version is missing");
    }
    let debian = std::fs::read_to_string("/etc/debian_version").unwrap_or_default();
    if !debian.trim().starts_with("12") {
        eprintln!(
            "setup: warning: Debian {} detected; the recipe was tested on Debian 12",
            debian.trim()
        );
    }
    let toolchain = profile != Profile::BenchPrebuilt;
    let mut pkgs: Vec<&str> = if toolchain {
        BUILD_PACKAGES.to_vec()
    } else {
        Vec::new()
    };
    match profile {
        Profile::Test => pkgs.extend(TEST_PACKAGES),
        Profile::Bench | Profile::BenchPrebuilt => pkgs.extend(BENCH_PACKAGES),
        Profile::Image => pkgs.extend(IMAGE_PACKAGES),
        Profile::Build => {}
    }
    let missing = missing_packages(&pkgs);
    if !missing.is_empty() {
        ensure!(
            sh::is_root(),
            "setup must install {} as root (apt-get)",
            missing.join(" ")
        );
        apt_install(&missing)?;
    }
    if !toolchain {
        if sh::is_root() {
            ensure_bpffs()?;
        }
        eprintln!("setup: ok (bench tools; prebuilt sluice binaries)");
        return Ok(());
    }
    check_debian_rustc()?;
    if !bpf_linker_ok() {
        ensure!(
            sh::is_root(),
            "setup must install bpf-linker into /usr/local as root"
        );
        install_bpf_linker()?;
    }
    if sh::is_root() {
        ensure_bpffs()?;
    }
    eprintln!("setup: ok (Debian rustc 1.96 / LLVM {LLVM_MAJOR}, bpf-linker {BPF_LINKER_VERSION})");
    Ok(())
}
