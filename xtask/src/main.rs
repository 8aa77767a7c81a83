//! `cargo xtask <command>`: everything that is not a plain cargo build.
//!
//! - `setup`: install what building sluice needs on Debian 12 (idempotent, quick when done)
//! - `build`: setup, then `cargo build --release`
//! - `test`:  setup, then formatting, lints, unit tests and the privileged integration tests
//! - `demo`:  setup, build, then a node with three pods on the real binaries
//! - `bench`: setup, build (unless `SLUICE_BIN_DIR` is set), then the benchmark (`bench/`)
//! - `image`: static binaries, then the container image `localhost/sluice` with podman
//!
//! Every command runs `setup` first.

mod bench;
mod demo;
mod image;
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
    /// Benchmark sluice against a veth pair, loopback and the reference CNI plugins (root).
    Bench {
        /// Shorter runs and smaller sizes (under 3 minutes).
        #[arg(long)]
        quick: bool,
        /// Rounds of the interleaved traffic measurements (default 3 quick, 5 full; the policy
        /// phase runs twice as many, shorter, in a full run).
        #[arg(long)]
        rounds: Option<usize>,
        /// Only these phases (comma-separated): traffic, cni, policy, progrun, memory.
        #[arg(long, value_delimiter = ',')]
        only: Option<Vec<String>>,
        /// Use the sluice binaries in this directory instead of building them.
        #[arg(long, env = "SLUICE_BIN_DIR")]
        bin_dir: Option<std::path::PathBuf>,
        /// Where to write report.md, report.svg and latest.json.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Build the DaemonSet's container image (`localhost/sluice:latest`) with podman, from
    /// statically linked binaries and `deploy/Containerfile` (no registry needed).
    Image {
        /// Image name and tag.
        #[arg(long, default_value = "localhost/sluice:latest")]
        tag: String,
        /// Also write the image as an OCI archive here (for `ctr images import` and the like).
        #[arg(long)]
        archive: Option<std::path::PathBuf>,
    },
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
        Cmd::Image { tag, archive } => {
            setup::run(setup::Profile::Image)?;
            image::run(&tag, archive.as_deref())
        }
        Cmd::Bench {
            quick,
            rounds,
            only,
            bin_dir,
            out,
        } => {
            let bins = match bin_dir {
                Some(dir) => {
                    setup::run(setup::Profile::BenchPrebuilt)?;
                    dir
                }
                None => {
                    setup::run(setup::Profile::Bench)?;
                    build_release()?;
                    sh::root().join("target/release")
                }
            };
            bench::run(bench::Options {
                quick,
                rounds,
                only,
                bins,
                out: out.unwrap_or_else(|| sh::root().join("target/bench")),
            })
        }
    }
}

/// `cargo build --release` of the whole workspace, tests crate included.
pub fn build_release() -> Result<()> {
    sh::run(sh::cargo().args(["build", "--release", "--workspace", "--bins"]))
}
