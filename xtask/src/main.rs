//! `cargo xtask <command>`: everything that is not a plain cargo build.
//!
//! - `setup`: install what building sluice needs on Debian 12 (idempotent, quick when done)
//! - `build`: setup, then `cargo build --release`
//! - `test`:  setup, then formatting, lints, unit tests and the privileged integration tests
//! - `demo`:  setup, build, then a node with three pods on the real binaries
//!
//! Every command runs `setup` first.

mod demo;
mod setup;
mod sh;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the toolchain and packages the build needs; check versions.
    Setup,
    /// Build every binary (release).
    Build,
    /// Run every test: fmt, clippy, unit tests, privileged integration tests (root).
    Test {
        /// Only the integration tests whose name contains this.
        #[arg(long)]
        filter: Option<String>,
        /// Skip fmt/clippy/unit tests.
        #[arg(long)]
        integration_only: bool,
    },
    /// Start a node with three pods and show traffic, counters and drops.
    Demo,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Setup => setup::run(setup::Profile::Build),
        Cmd::Build => {
            setup::run(setup::Profile::Build)?;
            build_release()
        }
        Cmd::Test {
            filter,
            integration_only,
        } => {
            setup::run(setup::Profile::Test)?;
            test::run(filter.as_deref(), integration_only)
        }
        Cmd::Demo => {
            setup::run(setup::Profile::Build)?;
            build_release()?;
            demo::run()
        }
    }
}

/// `cargo build --release` of the whole workspace, tests crate included.
pub fn build_release() -> Result<()> {
    sh::run(sh::cargo().args(["build", "--release", "--workspace", "--bins"]))
}
