//! Builds the eBPF programs (`ebpf/sluice-ebpf`) with Debian's cargo/rustc 1.96 for
//! `bpfel-unknown-none` and puts the object in OUT_DIR, where `src/datapath/object.rs` embeds it.
//!
//! That crate is outside this workspace and uses another toolchain (its rust-toolchain.toml
//! points at /usr), so the nested build must not inherit this build's compiler settings.
//! `cargo xtask setup` installs what it needs.
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

/// Environment of the outer (rustup stable) build that must not leak into the nested one.
const OUTER_ENV: [&str; 14] = [
    "RUSTUP_TOOLCHAIN",
    "RUSTC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_MAKEFLAGS",
    "CARGO",
    "RUSTDOC",
    "RUSTUP_TOOLCHAIN_SOURCE",
    "RUST_RECURSION_COUNT",
    // Points into rustup's toolchain: Debian's rustc must load its own libraries.
    "LD_LIBRARY_PATH",
];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let ebpf_dir = manifest.join("../ebpf/sluice-ebpf");
    let common_dir = manifest.join("../ebpf/sluice-common");
    for p in [
        ebpf_dir.join("src"),
        ebpf_dir.join("Cargo.toml"),
        ebpf_dir.join(".cargo/config.toml"),
        ebpf_dir.join("rust-toolchain.toml"),
        common_dir.join("src"),
        common_dir.join("Cargo.toml"),
    ] {
        println!("cargo::rerun-if-changed={}", p.display());
    }
    println!("cargo::rerun-if-env-changed=SLUICE_EBPF_CARGO");

    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("sluice-ebpf.o");
    let cargo = env::var("SLUICE_EBPF_CARGO").unwrap_or_else(|_| "/usr/bin/cargo".into());
    if !Path::new(&cargo).exists() || which("bpf-linker").is_none() {
        panic!(
            "the eBPF toolchain is missing ({cargo} or bpf-linker not found): run `cargo xtask setup` first"
        );
    }
    let target_dir = ebpf_dir.join("target");
    let mut cmd = Command::new(&cargo);
    for k in OUTER_ENV {
        cmd.env_remove(k);
    }
    cmd.current_dir(&ebpf_dir)
        .args(["build", "--release", "--target", "bpfel-unknown-none"])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTC", "/usr/bin/rustc")
        .env("RUSTC_BOOTSTRAP", "1");
    let status = cmd.status().expect("spawn Debian cargo for the eBPF build");
    assert!(status.success(), "eBPF build failed ({status})");
    let obj = target_dir.join("bpfel-unknown-none/release/sluice-ebpf");
    std::fs::copy(&obj, &out).unwrap_or_else(|e| panic!("copy {}: {e}", obj.display()));
}

fn which(bin: &str) -> Option<PathBuf> {
    env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.exists())
}
