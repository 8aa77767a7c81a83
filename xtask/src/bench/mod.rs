//! `cargo xtask bench [--quick]`: sluice against a bare veth pair, loopback, and the reference
//! CNI plugins, on this machine, inside network namespaces the bench creates and removes.
//!
//! The machine is noisy (absolute numbers drift by 2x between runs), so every traffic figure is
//! a ratio to a reference measured moments before with the same command, repeated over rounds,
//! and the report gives medians of those ratios. Phases:
//!
//! 1. traffic: veth, loopback, sluice, bridge, ptp (iperf3, sockperf, TCP CRR);
//! 2. CNI ADD/DEL latency: sluice, bridge + host-local, loopback (interleaved pod by pod);
//! 3. policy cost: N rules selecting other pods, sluice vs iptables;
//! 4. per-packet cost of the eBPF programs (BPF_PROG_TEST_RUN);
//! 5. sluiced's memory with many endpoints and rules.
//!
//! It is a benchmark, not a test: it fails only when the harness breaks, never on a number.

mod cni;
mod cni_latency;
mod daemon;
mod measure;
mod memory;
pub(crate) mod netns;
mod policy_cost;
mod progrun;
mod report;
mod stats;
mod topology;
mod traffic;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

use self::{cni::Plugin, report::Report, topology::Topo};

/// Where the sluice binaries are.
pub struct Bins {
    dir: PathBuf,
}

impl Bins {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn get(&self, name: &str) -> Result<PathBuf> {
        let p = self.dir.join(name);
        ensure!(
            p.is_file(),
            "{} is missing (build with `cargo xtask build`, or point SLUICE_BIN_DIR elsewhere)",
            p.display()
        );
        Ok(p)
    }
}

/// Durations and sizes of one run.
pub struct Config {
    pub quick: bool,
    pub rounds: usize,
    pub stream_secs: u32,
    pub sockperf_secs: u32,
    pub crr: Duration,
    /// The policy phase: more, shorter rounds than the traffic phase (its single-connection
    /// RR is the most placement-sensitive figure; more rounds steady its median).
    pub policy_rounds: usize,
    pub policy_run: Duration,
    /// Rounds of the cross-node and IPv6 phase (fewer in a quick run: its set-up is two nodes
    /// and two daemons per mode).
    pub crossnode_rounds: usize,
    pub cni_pods: usize,
    pub conc_pods: usize,
    /// Repetitions of the concurrent ADD wall time.
    pub conc_reps: usize,
    pub concurrency: usize,
    pub policy_levels: Vec<usize>,
    pub nft: bool,
    pub progrun_runs: usize,
    pub rss_endpoints: usize,
    pub rss_rules: usize,
}

impl Config {
    pub fn new(quick: bool, rounds: Option<usize>) -> Self {
        if quick {
            Self {
                quick,
                rounds: rounds.unwrap_or(3),
                stream_secs: 1,
                sockperf_secs: 1,
                crr: Duration::from_millis(500),
                policy_rounds: rounds.unwrap_or(5),
                policy_run: Duration::from_millis(300),
                crossnode_rounds: rounds.unwrap_or(2),
                cni_pods: 20,
                conc_pods: 100,
                conc_reps: 1,
                concurrency: 10,
                policy_levels: vec![0, 10_000],
                nft: false,
                progrun_runs: 5_000,
                // 1,000 ADDs alone take 15-40 s here: too much for the 3-minute budget.
                rss_endpoints: 100,
                rss_rules: 1_000,
            }
        } else {
            Self {
                quick,
                rounds: rounds.unwrap_or(5),
                stream_secs: 4,
                sockperf_secs: 3,
                crr: Duration::from_secs(2),
                policy_rounds: rounds.map(|r| r * 2).unwrap_or(10),
                policy_run: Duration::from_secs(1),
                crossnode_rounds: rounds.unwrap_or(5),
                cni_pods: 100,
                conc_pods: 100,
                conc_reps: 3,
                concurrency: 10,
                policy_levels: vec![0, 100, 1_000, 10_000],
                nft: true,
                progrun_runs: 20_000,
                rss_endpoints: 1_000,
                rss_rules: 10_000,
            }
        }
    }
}

pub const PHASES: [&str; 6] = ["traffic", "crossnode", "cni", "policy", "progrun", "memory"];

pub struct Options {
    pub quick: bool,
    pub rounds: Option<usize>,
    pub only: Option<Vec<String>>,
    pub bins: PathBuf,
    pub out: PathBuf,
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into())
}

/// iperf3, sockperf and the Rust servers in every topology's server namespace.
fn start_all_servers(topos: &mut [Topo]) -> Result<()> {
    for t in topos {
        t.start_servers(true)
            .with_context(|| format!("starting the servers of {}", t.label))?;
    }
    Ok(())
}

/// Pods on two simulated nodes (native routing, VXLAN) against the underlay veth between the
/// node namespaces, and same-node IPv6 pods against an IPv6 veth pair: RR and 1-flow stream.
fn cross_node_and_ipv6(cfg: &Config, bins: &Bins, rep: &mut Report) -> Result<()> {
    use traffic::Figure;
    let figures = [Figure::Stream1, Figure::Rr];
    {
        let (native, underlay) = Topo::cross_node(bins, "native", "native", 0)?;
        let (vxlan, _) = Topo::cross_node(bins, "vxlan", "vxlan", 1)?;
        // The reference borrows `native`'s nodes: first in the vector, dropped first.
        let mut topos = vec![underlay, native, vxlan];
        start_all_servers(&mut topos)?;
        traffic::run_figures(cfg, &topos, &figures, cfg.crossnode_rounds)?.report_pairs(
            rep,
            "Pods on two nodes, ratio to the underlay (a veth between the node namespaces)",
            "Client pod on node 1, server pod on node 2; the reference is node 1 to node 2 over the \
             veth that joins them. native: routes via the other node, the node's stack forwards; \
             vxlan: the program sets the tunnel key, pods get MTU 1450.",
            &[("native", "crossnode_native"), ("vxlan", "crossnode_vxlan")],
        );
    }
    let mut sluice6 = Topo::sluice(bins, "fd00:244::/64", None)?;
    sluice6.label = "sluice-ipv6";
    let mut topos = vec![Topo::veth6()?, sluice6];
    start_all_servers(&mut topos)?;
    traffic::run_figures(cfg, &topos, &figures, cfg.crossnode_rounds)?.report_pairs(
        rep,
        "IPv6 pods on one node, ratio to an IPv6 veth pair",
        "The same-node fast path (bpf_redirect_peer) over IPv6. RR here is the Rust 64 B ping-pong \
         loop on both sides (Debian 12's sockperf 3.7 has no IPv6).",
        &[("sluice-ipv6", "ipv6")],
    );
    Ok(())
}

pub fn run(opts: Options) -> Result<()> {
    ensure!(
        crate::sh::is_root(),
        "the bench creates network namespaces and loads eBPF programs: run it as root"
    );
    let phases: Vec<String> = match &opts.only {
        Some(v) => {
            for p in v {
                if !PHASES.contains(&p.as_str()) {
                    bail!("unknown phase {p:?}: choose from {}", PHASES.join(", "));
                }
            }
            v.clone()
        }
        None => PHASES.iter().map(|s| s.to_string()).collect(),
    };
    let want = |p: &str| phases.iter().any(|x| x == p);
    let cfg = Config::new(opts.quick, opts.rounds);
    netns::sweep_dead_leftovers();
    // A private copy of the binaries: a rebuild of the source directory during the run must
    // not mix two versions into one report.
    let src = Bins::new(opts.bins.clone());
    let snapshot = netns::TempDir::new("bins")?;
    let mut built = String::new();
    for b in ["sluiced", "sluice", "sluicectl"] {
        let from = src.get(b)?;
        std::fs::copy(&from, snapshot.path.join(b))
            .with_context(|| format!("copying {} to {}", from.display(), snapshot.path.display()))?;
        if b == "sluiced" {
            let mtime = std::fs::metadata(&from)?.modified()?;
            let age = std::time::SystemTime::now()
                .duration_since(mtime)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            built = format!("{} (built {} min before the run)", from.display(), age / 60);
        }
    }
    let bins = Bins::new(snapshot.path.clone());
    for p in ["bridge", "ptp", "host-local", "loopback"] {
        let path = Path::new(cni::REF_PLUGIN_DIR).join(p);
        ensure!(
            path.is_file(),
            "{} is missing (package containernetworking-plugins)",
            path.display()
        );
    }
    if want("policy") {
        policy_cost::preflight(&cfg)?;
    }
    netns::install_signal_handlers();
    let started = Instant::now();
    let mut rep = Report::default();
    eprintln!(
        "bench: {} run, {} rounds, binaries from {}, phases: {}",
        if cfg.quick { "quick" } else { "full" },
        cfg.rounds,
        opts.bins.display(),
        phases.join(",")
    );

    if want("traffic") || want("cni") {
        let t0 = Instant::now();
        let mut topos = vec![
            Topo::veth()?,
            Topo::loopback()?,
            Topo::sluice(&bins, "10.244.0.0/16", None)?,
            Topo::reference_cni("bridge", "10.246.0.0/16")?,
            Topo::reference_cni("ptp", "10.247.0.0/16")?,
        ];
        if want("traffic") {
            start_all_servers(&mut topos)?;
            traffic::run(&cfg, &topos)?.report(&mut rep);
            eprintln!("bench: traffic phase took {:.0}s", t0.elapsed().as_secs_f64());
        }
        if want("cni") {
            let t1 = Instant::now();
            let sluice = topos[2].plugin.clone().context("sluice plugin")?;
            let bridge = topos[3].plugin.clone().context("bridge plugin")?;
            let lo = Plugin::reference(
                "loopback",
                &serde_json::json!({ "cniVersion": "1.0.0", "name": "slb-lo", "type": "loopback" }),
                topos[2].node()?,
            );
            cni_latency::run(&cfg, &[sluice, bridge, lo], &mut rep)?;
            eprintln!("bench: CNI phase took {:.0}s", t1.elapsed().as_secs_f64());
        }
    }

    if want("crossnode") {
        let t0 = Instant::now();
        cross_node_and_ipv6(&cfg, &bins, &mut rep)?;
        eprintln!(
            "bench: cross-node and IPv6 phase took {:.0}s",
            t0.elapsed().as_secs_f64()
        );
    }

    if want("policy") || want("progrun") {
        let t0 = Instant::now();
        // progrun alone needs only the sluice nodes.
        let pt = policy_cost::build(&cfg, &bins, want("policy"))?;
        eprintln!(
            "bench: policy topologies ready in {:.0}s",
            t0.elapsed().as_secs_f64()
        );
        if want("policy") {
            policy_cost::measure(&cfg, &pt, &mut rep)?;
        }
        if want("progrun") {
            progrun::run(&cfg, &pt.sluice, &mut rep)?;
        }
        eprintln!(
            "bench: policy/progrun phases took {:.0}s",
            t0.elapsed().as_secs_f64()
        );
    }

    if want("memory") {
        let t0 = Instant::now();
        memory::run(&cfg, &bins, &mut rep)?;
        eprintln!("bench: memory phase took {:.0}s", t0.elapsed().as_secs_f64());
    }

    let runtime = started.elapsed().as_secs_f64();
    rep.num("runtime_s", runtime);
    rep.num("rounds", cfg.rounds as f64);
    rep.text("mode", if cfg.quick { "quick" } else { "full" });
    rep.text("kernel", &kernel());
    rep.text("sluiced", &built);
    rep.num(
        "cpus",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) as f64,
    );
    rep.target("RR vs veth", "rr_vs_veth", ">= 0.95", |x| x >= 0.95);
    rep.target("stream 1 flow vs veth", "stream1_vs_veth", ">= 0.95", |x| {
        x >= 0.95
    });
    rep.target(
        "ADD p50 vs loopback plugin",
        "add_p50_vs_loopback",
        "<= 1.3",
        |x| x <= 1.3,
    );
    rep.target(
        "100 pods, 10 concurrent ADDs (s)",
        "add_conc100_wall_s",
        "<= 0.5",
        |x| x <= 0.5,
    );
    rep.target("RR with 10k rules vs none", "policy10k_rr_vs_0", ">= 0.97", |x| {
        x >= 0.97
    });
    rep.target(
        "sluiced RSS, 1k endpoints + 10k rules (MiB)",
        "daemon_rss_mib_1k",
        "< 30",
        |x| x < 30.0,
    );
    let header = format!(
        "{} run, {} rounds, kernel {}, {} CPUs, {:.0} s, binaries {}. Ratios are medians of per-round \
         ratios to a reference measured moments before; absolute figures drift between runs.",
        if cfg.quick { "Quick (`--quick`)" } else { "Full" },
        cfg.rounds,
        kernel(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        runtime,
        built
    );
    println!("{}", rep.terminal());
    rep.write(&opts.out, &header)?;
    println!(
        "\nbench: done in {runtime:.0}s; wrote {}/report.md, latest.json, report.svg",
        opts.out.display()
    );
    Ok(())
}
