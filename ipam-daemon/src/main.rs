//! `sluiced`, the sluice node daemon. See `cli.rs` for its flags and the README for the
//! architecture.

mod attach;
mod cli;
mod datapath;
mod events;
mod fsutil;
mod hostnet;
mod install;
mod ipam;
mod locks;
mod maintenance;
mod metrics;
mod node;
mod policy;
mod routing;
mod server;
mod status;
mod store;

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, atomic::AtomicBool},
    time::Instant,
};

use anyhow::Context;
use clap::Parser;
use sluice_common::endpoint::DatapathConfig;

use crate::{
    cli::Cli,
    datapath::{Datapath, DatapathOptions},
    events::EventHub,
    hostnet::HostNet,
    ipam::Ipam,
    node::{Node, Slots},
    store::Store,
};

fn init_logging(cli: &Cli) {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(&cli.log_level));
    // Colours only for a terminal: logs collected by a container runtime or a file stay plain.
    use std::io::IsTerminal;
    let builder = fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() {
    // A node agent should not hold on to memory it freed: glibc gives every thread an arena of
    // its own (and keeps freed pages in each); two are plenty for two runtime workers.
    // SAFETY: mallopt has no memory-safety preconditions.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    let cli = Cli::parse();
    init_logging(&cli);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(run(cli)) {
        tracing::error!("{e:#}");
        eprintln!("sluiced: {e:#}");
        std::process::exit(1);
    }
}

/// Datapath defaults: conntrack lifetimes close to Linux's nf_conntrack and Cilium's.
fn datapath_config() -> DatapathConfig {
    DatapathConfig {
        flags: 0,
        policy_gen: 1,
        vxlan_ifindex: 0,
        vxlan_vni: 0,
        ct_tcp_syn_s: 60,
        ct_tcp_established_s: 6 * 3600,
        ct_tcp_closing_s: 10,
        ct_udp_s: 60,
        ct_icmp_s: 30,
        ct_other_s: 60,
        vxlan_mac: [0; 6],
        _pad: [0; 2],
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut cfg = cli.config()?;
    if cfg.uninstall {
        for what in install::uninstall(&cfg).await? {
            println!("removed {what}");
        }
        return Ok(());
    }
    // A bad kubeconfig fails before anything on the host is touched.
    let kube_client = if cfg.api_mode {
        Some(policy::kube::client(cfg.kubeconfig.as_deref()).await?)
    } else {
        None
    };
    // Files the daemon creates are root's alone (state, socket, queue).
    // SAFETY: umask has no failure mode.
    unsafe { libc::umask(0o077) };
    fsutil::create_private_dir(&cfg.state_dir)
        .with_context(|| format!("creating --state-dir {}", cfg.state_dir.display()))?;
    let store = Store::open(&cfg.state_dir.join("sluice.redb"))?;

    let datapath = Datapath::open(&DatapathOptions {
        bpffs: cfg.bpffs.clone(),
        state_dir: cfg.state_dir.clone(),
        sizes: cfg.sizes,
        reset: cfg.reset_datapath,
    })?;
    tracing::info!(
        outcome = ?datapath.outcome,
        kernel = %datapath.kernel.release,
        verified_insns = ?datapath.verified_insns,
        "datapath ready"
    );
    // Keep the policy generation across restarts (conntrack entries carry it).
    let previous = datapath.maps.config();
    let mut dp_cfg = datapath_config();
    dp_cfg.policy_gen = previous.policy_gen.max(1);
    datapath.maps.set_config(&dp_cfg)?;

    for id in datapath.program_ids() {
        match aya_log::EbpfLogger::init_from_id(*id) {
            Ok(logger) => {
                tokio::spawn(async move {
                    // SAFETY: the AsyncFd owns the logger, so its fd outlives the registration.
                    let registered = unsafe {
                        tokio::io::unix::AsyncFd::register_with_interest(
                            logger,
                            tokio::io::Interest::READABLE,
                        )
                    };
                    let Ok(mut fd) = registered else {
                        return;
                    };
                    loop {
                        let Ok(mut g) = fd.readable_mut().await else {
                            return;
                        };
                        g.get_inner_mut().flush();
                        g.clear_ready();
                    }
                });
            }
            Err(e) => tracing::debug!(program = id, error = %e, "no aya-log reader"),
        }
    }

    let hostnet = HostNet::connect()?;

    // Policy sources are read before anything is reconciled: a daemon restarting under deny
    // policies must not open pods up even for a moment.
    let mut manifest_dir = cfg
        .manifests
        .as_ref()
        .map(|d| policy::manifests::ManifestDir::new(d));
    // API mode: the whole cluster is listed here (a daemon that cannot list it exits and is
    // restarted, leaving the datapath as it was); the watchers start once the daemon is ready.
    let objects = match (manifest_dir.as_mut(), &kube_client) {
        (Some(m), _) => {
            m.rescan();
            m.merged()
        }
        (None, Some(client)) => tokio::time::timeout(
            policy::kube::INITIAL_LIST_TIMEOUT,
            policy::kube::initial(client, &cfg.node_name),
        )
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the Kubernetes API server did not answer the initial list within {:?}",
                policy::kube::INITIAL_LIST_TIMEOUT
            )
        })?
        .context("initial list from the Kubernetes API server")?,
        (None, None) => Default::default(),
    };
    // The pod CIDR: the flag, else this node's Node object, else the default.
    if cfg.pod_cidrs.is_empty() {
        cfg.pod_cidrs = match objects.nodes.get(&cfg.node_name) {
            Some(n) if !n.pod_cidrs.is_empty() => {
                tracing::info!(node = %cfg.node_name, cidrs = ?n.pod_cidrs, "pod CIDR from the Node object");
                n.pod_cidrs.clone()
            }
            _ if cfg.api_mode => anyhow::bail!(
                "Node {} has no spec.podCIDRs (is the controller manager allocating node CIDRs?) and no --pod-cidr was given",
                cfg.node_name
            ),
            _ => vec!["10.244.1.0/24".parse().expect("literal")],
        };
    }
    let ipam = Ipam::new(&cfg.pod_cidrs)?;
    let gateways: Vec<IpAddr> = ipam.pools().iter().map(|p| p.gateway()).collect();
    hostnet
        .ensure_gateway_device(&cfg.gateway_device, &gateways)
        .await
        .context("gateway device")?;
    if let Err(e) = hostnet::enable_forwarding(
        gateways.iter().any(|g| g.is_ipv4()),
        gateways.iter().any(|g| g.is_ipv6()),
    ) {
        tracing::warn!(error = %e, "IP forwarding is off: pods reach local pods only");
    }
    let (mut routing, pod_mtu) = routing::Routing::setup(
        cfg.routing,
        &cfg.node_name,
        objects.nodes.get(&cfg.node_name),
        &hostnet,
        &datapath,
        routing::VxlanParams {
            vni: cfg.vxlan_vni,
            port: cfg.vxlan_port,
        },
        &gateways,
    )
    .await
    .context("routing between nodes")?;
    routing.sync(&objects.nodes, &hostnet, &datapath).await;
    let engine = policy::PolicyEngine::new(&datapath.maps, objects);

    let mtu = cfg.mtu.unwrap_or(pod_mtu);
    let node = Arc::new(Node {
        cfg: cfg.clone(),
        started: Instant::now(),
        ipam: Mutex::new(ipam),
        records: Mutex::new(HashMap::new()),
        slots: Mutex::new(Slots::default()),
        store,
        datapath: Arc::new(datapath),
        tcx_pending: Default::default(),
        tcx_wake: Default::default(),
        hostnet,
        gateways,
        mtu,
        locks: Default::default(),
        ready: AtomicBool::new(false),
        node_name: cfg.node_name.clone(),
        ct_live: Default::default(),
        policy: tokio::sync::Mutex::new(engine),
        policy_names: Default::default(),
        policy_revision: Default::default(),
        activity: Mutex::new(Instant::now()),
        metrics: Default::default(),
        add_started: Default::default(),
        routing: tokio::sync::Mutex::new(routing),
    });
    let summary = node.reconcile().await;
    tracing::info!(?summary, "reconciled state with the datapath");
    let applied = maintenance::drain_pending(&node).await;
    if applied > 0 {
        tracing::info!(applied, "applied teardowns queued while sluiced was down");
    }

    let hub = Arc::new(EventHub::default());
    if let Some(ring) = node.datapath.maps.take_events() {
        tokio::spawn(events::run_reader(ring, hub.clone(), node.clone()));
    }
    tokio::spawn(maintenance::conntrack_gc(node.clone(), cfg.ct_gc_interval));
    tokio::spawn(maintenance::pending_loop(node.clone()));
    tokio::spawn(attach::to_tcx(node.clone()));
    if let Some(m) = manifest_dir {
        tokio::spawn(policy::manifests::watch(m, node.clone()));
    }
    if let Some(client) = kube_client {
        tokio::spawn(policy::kube::run(client, cfg.node_name.clone(), node.clone()));
    }

    // Ready: the socket accepts connections from here on.
    let listener = server::bind(&cfg.socket)?;
    node.set_ready();
    tracing::info!(socket = %cfg.socket.display(), cidrs = ?cfg.pod_cidrs, "sluiced ready");
    let server = tokio::spawn(server::serve(listener, node.clone(), hub.clone()));
    if let Some(addr) = cfg.metrics_address {
        tokio::spawn(metrics::serve(addr, node.clone()));
    }
    // Only now is the network usable: announce it to the runtime.
    if cfg.install_cni {
        install::install(&cfg).context("installing the CNI plugin")?;
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    // Stop serving; leave the datapath (pinned programs, links and maps) in place so pods keep
    // their traffic until the next daemon re-adopts it.
    server.abort();
    let _ = std::fs::remove_file(&cfg.socket);
    tracing::info!("stopped; datapath left in place");
    Ok(())
}
