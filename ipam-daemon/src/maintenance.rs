//! Periodic work: conntrack garbage collection and the queue of teardowns the CNI plugin left
//! while the daemon was down.

use std::{path::PathBuf, sync::Arc, time::Duration};

use sluice_api::Attachment;

use crate::node::Node;

/// Delete expired conntrack entries every `interval`. Returns never.
pub async fn conntrack_gc(node: Arc<Node>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        let n = node.clone();
        let res = tokio::task::spawn_blocking(move || {
            let now = crate::events::monotonic_s();
            n.datapath.maps.ct_sweep(now, |_| false)
        })
        .await;
        if let Ok((live, removed)) = res {
            node.ct_live.store(live, std::sync::atomic::Ordering::Relaxed);
            node.datapath
                .maps
                .ct_live
                .store(live, std::sync::atomic::Ordering::Relaxed);
            if removed > 0 {
                tracing::debug!(live, removed, "conntrack gc");
            }
        }
    }
}

/// The queue directory beside the socket.
pub fn pending_dir(socket: &std::path::Path) -> PathBuf {
    socket
        .parent()
        .unwrap_or(std::path::Path::new("/"))
        .join(sluice_api::PENDING_DIR_NAME)
}

/// Apply every queued teardown; remove each file once applied. Returns how many were applied.
pub async fn drain_pending(node: &Node) -> usize {
    let dir = pending_dir(&node.cfg.socket);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut done = 0;
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let parsed: Option<Attachment> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        match parsed {
            Some(a) => match node.teardown(&a).await {
                Ok(_) => {
                    tracing::info!(attachment = %a, "applied queued teardown");
                    let _ = std::fs::remove_file(&path);
                    done += 1;
                }
                Err(e) => {
                    tracing::warn!(attachment = %a, error = %e.message, "queued teardown failed; will retry")
                }
            },
            None => {
                tracing::warn!(file = %path.display(), "unreadable queued teardown: removed");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    done
}

pub async fn pending_loop(node: Arc<Node>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        drain_pending(&node).await;
    }
}
