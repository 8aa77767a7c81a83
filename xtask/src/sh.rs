//! Running commands, loudly.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent")
        .to_owned()
}

/// The cargo that runs us (rustup's), in the workspace root.
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn show(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Run, inheriting stdio; fail on a non-zero status.
pub fn run(c: &mut Command) -> Result<()> {
    eprintln!("+ {}", show(c));
    let st = c.status().with_context(|| format!("spawning {}", show(c)))?;
    if !st.success() {
        bail!("`{}` failed ({st})", show(c));
    }
    Ok(())
}

/// Run and capture stdout (stderr inherited); fail on a non-zero status.
pub fn output(c: &mut Command) -> Result<String> {
    let out = c
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("spawning {}", show(c)))?;
    if !out.status.success() {
        bail!("`{}` failed ({})", show(c), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run quietly; report only success.
pub fn quiet(c: &mut Command) -> bool {
    c.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn is_root() -> bool {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::geteuid() == 0 }
}
