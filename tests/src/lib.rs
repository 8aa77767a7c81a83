//! Support for sluice's privileged integration tests. Tests create every namespace, veth and
//! bpffs pin they use, named with a per-process prefix (`slt<pid>...`), and remove them in
//! `Drop` (also when a test panics). Leftovers of test processes that died are swept on
//! start-up. Nothing touches the machine's own interfaces, routes or firewall.
//!
//! The binaries under test come from `SLUICE_BIN_DIR` (set by `cargo xtask test`).

pub mod cni;
pub mod daemon;
pub mod maps;
pub mod multinode;
pub mod netpol;
pub mod ns;
pub mod podman;
pub mod traffic;

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

/// Directory of the binaries under test.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("SLUICE_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release"))
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build with `cargo xtask build`",
        p.display()
    );
    p
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `slt<pid>x<n>` + `suffix`.
pub fn unique(suffix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("slt{}x{n}{suffix}", std::process::id())
}

/// The prefix shared by everything this process creates.
pub fn prefix() -> String {
    format!("slt{}x", std::process::id())
}

/// Is this test run privileged enough? Tests call it first and panic with the reason when not
/// (they are `#[ignore]`d for plain `cargo test`, so they only run when asked to).
pub fn require_root() {
    // SAFETY: no arguments.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "sluice integration tests need root: run `cargo xtask test`"
    );
    ns::sweep_dead_leftovers();
}
