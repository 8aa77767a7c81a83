//! How the datapath gets onto a pod's host veth, in two steps.
//!
//! A tcx attach waits for an RCU grace period in the kernel while holding the rtnl lock
//! (7-30 ms here, two per pod), which alone would make an ADD several times slower than
//! exec'ing any plugin, and would stall every netlink request on the node meanwhile. So an
//! ADD attaches with clsact/cls_bpf filters (the same programs; the filter list is published
//! with call_rcu, ~0.1 ms), and a background task moves each endpoint to pinned tcx links
//! while the node is quiet: tcx attach for one direction, remove that direction's filter,
//! repeat for the other, then remove the empty clsact qdisc. Steady state is tcx everywhere.
//! On kernels without tcx (before 6.6) endpoints simply stay on clsact.

use std::{sync::Arc, time::Duration};

use sluice_api::{ApiError, ErrorKind};

use crate::node::{Node, api_err, chain};

/// How long the node must have been quiet (no ADD/DEL request) before a tcx attach.
const IDLE: Duration = Duration::from_millis(200);

/// Is the endpoint's interface carrying the programs (tcx links pinned, or clsact filters)?
pub async fn is_attached(node: &Node, ifindex: u32) -> bool {
    node.datapath.is_attached(ifindex) || node.hostnet.has_clsact(ifindex).await.unwrap_or(false)
}

/// Make sure the programs run on `ifname` before an ADD returns.
pub async fn first_attach(node: &Node, ifname: &str, ifindex: u32) -> Result<(), ApiError> {
    if node.datapath.is_attached(ifindex) {
        return Ok(());
    }
    let dp = |e: crate::datapath::DatapathError| api_err(ErrorKind::Datapath, chain(&e));
    if !node.hostnet.has_clsact(ifindex).await.unwrap_or(false) {
        tokio::task::block_in_place(|| node.datapath.attach_clsact(ifname)).map_err(dp)?;
    } else {
        // A filter from an earlier attempt: replace it, so it runs the current programs.
        tokio::task::block_in_place(|| {
            node.datapath.detach_clsact_program(ifname, true)?;
            node.datapath.detach_clsact_program(ifname, false)?;
            node.datapath.attach_clsact(ifname)
        })
        .map_err(dp)?;
    }
    if node.datapath.kernel.tcx() {
        node.tcx_pending
            .lock()
            .expect("pending")
            .insert(ifindex, ifname.to_owned());
        node.tcx_wake.notify_one();
    }
    Ok(())
}

/// Remove the programs from an interface (tcx pins and clsact). Gone already is fine.
pub async fn detach(node: &Node, ifindex: u32) -> Result<(), ApiError> {
    node.tcx_pending.lock().expect("pending").remove(&ifindex);
    node.datapath
        .detach(ifindex)
        .map_err(|e| api_err(ErrorKind::Datapath, chain(&e)))?;
    node.hostnet
        .delete_clsact(ifindex)
        .await
        .map_err(|e| api_err(ErrorKind::Netlink, chain(&e)))
}

async fn until_idle(node: &Node) {
    loop {
        let quiet = node.last_activity().elapsed();
        if quiet >= IDLE {
            return;
        }
        tokio::time::sleep(IDLE - quiet).await;
    }
}

/// Move one endpoint from clsact to tcx. A foreground request waits at most one grace period.
async fn migrate(node: &Arc<Node>, ifindex: u32, ifname: &str) -> Result<(), crate::datapath::DatapathError> {
    for ingress in [true, false] {
        until_idle(node).await;
        // Still ours? (Deregistered or replaced meanwhile: nothing to do.)
        if !node.tcx_pending.lock().expect("pending").contains_key(&ifindex) {
            return Ok(());
        }
        let (dp, name) = (node.datapath.clone(), ifname.to_owned());
        tokio::task::spawn_blocking(move || {
            dp.attach_one(&name, ifindex, ingress)?;
            dp.detach_clsact_program(&name, ingress)
        })
        .await
        .map_err(|e| crate::datapath::DatapathError::Io {
            op: "join attach task",
            path: Default::default(),
            source: std::io::Error::other(e.to_string()),
        })??;
    }
    if let Err(e) = node.hostnet.delete_clsact(ifindex).await {
        tracing::debug!(error = %e, ifindex, "removing the empty clsact qdisc");
    }
    Ok(())
}

/// Move endpoints to tcx, one at a time, whenever the node is quiet. Returns never.
pub async fn to_tcx(node: Arc<Node>) {
    loop {
        let next = node
            .tcx_pending
            .lock()
            .expect("pending")
            .iter()
            .next()
            .map(|(i, n)| (*i, n.clone()));
        let Some((ifindex, ifname)) = next else {
            node.tcx_wake.notified().await;
            continue;
        };
        // The interface may have been renamed or removed: only migrate what is still there.
        let alive = matches!(node.hostnet.link(&ifname).await, Ok(Some(l)) if l.index == ifindex);
        if alive {
            match migrate(&node, ifindex, &ifname).await {
                Ok(()) => tracing::debug!(ifname, ifindex, "endpoint moved to tcx"),
                Err(e) => {
                    // Stays on clsact, which carries the same programs; try again later.
                    tracing::warn!(ifname, error = %chain(&e), "moving to tcx failed; staying on clsact for now");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            }
        }
        node.tcx_pending.lock().expect("pending").remove(&ifindex);
    }
}
