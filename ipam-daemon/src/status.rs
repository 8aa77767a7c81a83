//! `status`: health and figures of the daemon.

use sluice_api::{MapFill, Status};

use crate::node::Node;

pub fn status(node: &Node) -> Status {
    let maps = node
        .datapath
        .maps
        .fill()
        .into_iter()
        .map(|(name, entries, capacity)| MapFill {
            name: name.into(),
            entries,
            capacity,
        })
        .collect();
    let endpoints = node
        .records
        .lock()
        .expect("records")
        .values()
        .filter(|r| r.endpoint.is_some())
        .count() as u64;
    let on_clsact = node.tcx_pending.lock().expect("pending").len();
    Status {
        version: env!("CARGO_PKG_VERSION").into(),
        ready: node.is_ready(),
        node_name: node.node_name.clone(),
        routing: node
            .routing
            .try_lock()
            .map(|r| r.mode.name())
            .unwrap_or("busy")
            .into(),
        pools: node.pool_status(),
        endpoints,
        kernel: node.datapath.kernel.release.clone(),
        features: node.datapath.kernel.features.clone(),
        clsact_endpoints: on_clsact as u64,
        attach_mode: if node.datapath.kernel.tcx() {
            format!("tcx ({on_clsact} endpoints still on clsact)")
        } else {
            "clsact (kernel without tcx)".into()
        },
        maps,
        datapath_counters: node.datapath.maps.global_counters(),
        policies: node
            .policy
            .try_lock()
            .map(|p| p.stats.policies as u64)
            .unwrap_or(0),
        identities: node
            .policy
            .try_lock()
            .map(|p| p.stats.identities as u64)
            .unwrap_or(0),
        policy_revision: node.policy_revision.load(std::sync::atomic::Ordering::Acquire),
        policy_generation: node.datapath.maps.config().policy_gen,
        policy_entries: node
            .policy
            .try_lock()
            .map(|p| p.stats.entries as u64)
            .unwrap_or(0),
        uptime_s: node.started.elapsed().as_secs(),
    }
}
