//! The local API server: a root-only Unix socket speaking `sluice_api` (one JSON request per
//! line, one reply per line; `monitor` streams).

use std::{os::unix::fs::PermissionsExt, path::Path, sync::Arc};

use sluice_api::{ErrorKind, Reply, Request};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};

use crate::{
    events::EventHub,
    node::{Node, api_err},
};

/// Bind the socket: refuse if another daemon answers on it, replace a stale one, mode 0600
/// in a 0700 directory.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        crate::fsutil::create_private_dir(dir)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("another sluiced is serving {}", path.display());
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

pub async fn serve(listener: UnixListener, node: Arc<Node>, hub: Arc<EventHub>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let node = node.clone();
                let hub = hub.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, node, hub).await {
                        tracing::debug!(error = %e, "api connection ended");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn write_reply(w: &mut (impl AsyncWriteExt + Unpin), reply: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).expect("serialize reply");
    line.push(b'\n');
    w.write_all(&line).await
}

fn ok<T: serde::Serialize>(v: T) -> Reply {
    Reply::Ok(serde_json::to_value(v).expect("serialize"))
}

async fn connection(stream: UnixStream, node: Arc<Node>, hub: Arc<EventHub>) -> std::io::Result<()> {
    // The socket is 0600 root; check the peer too, in case the file mode was loosened.
    let cred = stream.peer_cred()?;
    let (r, mut w) = stream.into_split();
    if cred.uid() != 0 {
        let reply = Reply::Error(api_err(ErrorKind::BadRequest, "sluiced serves root only"));
        return write_reply(&mut w, &reply).await;
    }
    let mut lines = BufReader::new(r).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let req: Request = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                write_reply(
                    &mut w,
                    &Reply::Error(api_err(ErrorKind::BadRequest, format!("bad request: {e}"))),
                )
                .await?;
                continue;
            }
        };
        if let Request::Monitor { verdicts } = req {
            write_reply(&mut w, &ok(serde_json::json!({"streaming": true}))).await?;
            return crate::events::stream(&hub, verdicts, &node, w).await;
        }
        let reply = handle(&node, req).await;
        write_reply(&mut w, &reply).await?;
    }
    Ok(())
}

/// One request, one reply. Every operation logs one line with the attachment (container id).
pub async fn handle(node: &Node, req: Request) -> Reply {
    let started = std::time::Instant::now();
    let (op, target) = describe(&req);
    if matches!(
        req,
        Request::Allocate { .. }
            | Request::Register(_)
            | Request::Deregister { .. }
            | Request::Teardown { .. }
            | Request::Release { .. }
    ) {
        node.touch();
    }
    // The daemon's view of CNI operations, for the metrics.
    let add_key = match &req {
        Request::Allocate { attachment, .. } => Some((attachment.clone(), true)),
        Request::Register(r) => Some((r.attachment.clone(), false)),
        Request::Teardown { attachment } => Some((attachment.clone(), false)),
        _ => None,
    };
    if let Some((a, true)) = &add_key {
        node.add_started
            .lock()
            .expect("add timing")
            .insert(a.clone(), started);
    }
    let reply = match req {
        Request::Status => ok(crate::status::status(node)),
        Request::Allocate {
            attachment,
            pod,
            requested,
        } => node
            .allocate(&attachment, pod, &requested)
            .await
            .map(ok)
            .unwrap_or_else(Reply::Error),
        Request::Release { attachment } => node
            .release(&attachment)
            .await
            .map(ok)
            .unwrap_or_else(Reply::Error),
        Request::Register(r) => node.register(&r).await.map(ok).unwrap_or_else(Reply::Error),
        Request::Deregister { attachment } => node
            .deregister(&attachment)
            .await
            .map(|()| ok(()))
            .unwrap_or_else(Reply::Error),
        Request::Teardown { attachment } => node
            .teardown(&attachment)
            .await
            .map(ok)
            .unwrap_or_else(Reply::Error),
        Request::Inspect { attachment } => node
            .inspect(&attachment)
            .await
            .map(ok)
            .unwrap_or_else(Reply::Error),
        Request::Gc { valid } => ok(node.gc(&valid).await),
        Request::Endpoints => ok(node.endpoints()),
        Request::Leases => ok(node.leases()),
        Request::Policy { pod } => {
            let local = node.endpoint_of_pod(&pod);
            let engine = node.policy.lock().await;
            ok(crate::policy::explain::explain(&engine, &pod, local))
        }
        Request::Monitor { .. } => unreachable!("handled by the connection"),
    };
    if op != "status" && op != "endpoints" && op != "leases" && op != "policy" && op != "inspect" {
        node.touch();
    }
    let ok = matches!(reply, Reply::Ok(_));
    match (op, add_key) {
        ("allocate", Some((a, _))) if !ok => {
            node.add_started.lock().expect("add timing").remove(&a);
            node.metrics
                .observe("add", false, started.elapsed().as_secs_f64());
        }
        ("register", Some((a, _))) => {
            let since = node
                .add_started
                .lock()
                .expect("add timing")
                .remove(&a)
                .unwrap_or(started);
            node.metrics.observe("add", ok, since.elapsed().as_secs_f64());
        }
        ("teardown", Some((a, _))) => {
            // An ADD that failed after allocating is torn down: forget its start time.
            node.add_started.lock().expect("add timing").remove(&a);
            node.metrics.observe("del", ok, started.elapsed().as_secs_f64());
        }
        ("inspect", _) => node.metrics.observe("check", ok, started.elapsed().as_secs_f64()),
        ("gc", _) => node.metrics.observe("gc", ok, started.elapsed().as_secs_f64()),
        _ => {}
    }
    let ms = started.elapsed().as_secs_f64() * 1e3;
    match &reply {
        Reply::Ok(_) if op == "status" || op == "endpoints" || op == "leases" => {
            tracing::debug!(op, ms, "api")
        }
        Reply::Ok(_) => tracing::info!(op, container = %target, ms, "api"),
        Reply::Error(e) => {
            tracing::warn!(op, container = %target, ms, error = %e.message, kind = ?e.kind, "api")
        }
    }
    reply
}

fn describe(req: &Request) -> (&'static str, String) {
    match req {
        Request::Status => ("status", String::new()),
        Request::Allocate { attachment, .. } => ("allocate", attachment.to_string()),
        Request::Release { attachment } => ("release", attachment.to_string()),
        Request::Register(r) => ("register", r.attachment.to_string()),
        Request::Deregister { attachment } => ("deregister", attachment.to_string()),
        Request::Teardown { attachment } => ("teardown", attachment.to_string()),
        Request::Inspect { attachment } => ("inspect", attachment.to_string()),
        Request::Gc { valid } => ("gc", format!("{} valid", valid.len())),
        Request::Endpoints => ("endpoints", String::new()),
        Request::Leases => ("leases", String::new()),
        Request::Policy { pod } => ("policy", format!("{}/{}", pod.namespace, pod.name)),
        Request::Monitor { .. } => ("monitor", String::new()),
    }
}
