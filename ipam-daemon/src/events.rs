//! Flow events from the datapath's ring buffer: decoded, named (which pod, which reason) and
//! fanned out to `monitor` clients; drops are also counted for the metrics.

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use aya::maps::{MapData, RingBuf};
use sluice_api::FlowEventInfo;
use sluice_common::{
    direction,
    endpoint::CFG_F_VERDICT_EVENTS,
    event::{FlowEvent, VERDICT_DROP, drop_reason},
};
use tokio::{io::AsyncWriteExt, io::unix::AsyncFd, sync::broadcast};

use crate::{datapath::maps::ip_from128, node::Node};

pub struct EventHub {
    tx: broadcast::Sender<Arc<FlowEventInfo>>,
    verdict_subscribers: AtomicUsize,
    /// Drops seen in events, by reason (index = drop_reason).
    pub drops: [AtomicU64; drop_reason::COUNT],
    pub events_total: AtomicU64,
}

impl Default for EventHub {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(4096).0,
            verdict_subscribers: AtomicUsize::new(0),
            drops: std::array::from_fn(|_| AtomicU64::new(0)),
            events_total: AtomicU64::new(0),
        }
    }
}

pub fn proto_name(p: u8) -> String {
    match p {
        0 => "arp".into(),
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Seconds of CLOCK_MONOTONIC: the clock conntrack expiries are in.
pub fn monotonic_s() -> u32 {
    (monotonic_ns() / 1_000_000_000) as u32
}

fn decode(node: &Node, ev: &FlowEvent) -> FlowEventInfo {
    let wall_ms = crate::node::now_unix_ms();
    let age_ms = monotonic_ns().saturating_sub(ev.ts_ns) / 1_000_000;
    let pod = node.endpoint_name(ev.ep_id).unwrap_or_else(|| {
        if ev.ep_id == u32::MAX {
            "-".into()
        } else {
            format!("ep{}", ev.ep_id)
        }
    });
    let src: IpAddr = ip_from128(&ev.src);
    let dst: IpAddr = ip_from128(&ev.dst);
    FlowEventInfo {
        time_ms: wall_ms.saturating_sub(age_ms),
        verdict: if ev.verdict == VERDICT_DROP {
            "drop"
        } else {
            "allow"
        }
        .into(),
        reason: if ev.verdict == VERDICT_DROP {
            drop_reason::NAMES
                .get(ev.reason as usize)
                .copied()
                .unwrap_or("unknown")
                .into()
        } else {
            String::new()
        },
        direction: if ev.direction == direction::INGRESS {
            "ingress"
        } else {
            "egress"
        }
        .into(),
        pod,
        src,
        dst,
        sport: ev.sport,
        dport: ev.dport,
        proto: proto_name(ev.proto),
        src_identity: ev.src_identity,
        dst_identity: ev.dst_identity,
        policy: node.policy_name(ev.policy_ref),
    }
}

/// Read the ring buffer until the daemon stops.
pub async fn run_reader(ring: RingBuf<MapData>, hub: Arc<EventHub>, node: Arc<Node>) {
    // SAFETY: the AsyncFd owns the ring buffer, so its fd outlives the registration.
    let mut fd = match unsafe { AsyncFd::register(ring) } {
        Ok(fd) => fd,
        Err(e) => {
            tracing::error!(error = %e, "cannot poll the event ring buffer: no drop events");
            return;
        }
    };
    loop {
        let mut guard = match fd.readable_mut().await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "event ring buffer");
                return;
            }
        };
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            if item.len() < std::mem::size_of::<FlowEvent>() {
                continue;
            }
            // SAFETY: the datapath writes whole FlowEvents; read unaligned to be safe.
            let ev: FlowEvent = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const FlowEvent) };
            hub.events_total.fetch_add(1, Ordering::Relaxed);
            if ev.verdict == VERDICT_DROP
                && let Some(c) = hub.drops.get(ev.reason as usize)
            {
                c.fetch_add(1, Ordering::Relaxed);
            }
            if hub.tx.receiver_count() > 0 {
                let _ = hub.tx.send(Arc::new(decode(&node, &ev)));
            }
        }
        guard.clear_ready();
    }
}

/// Stream events to one `monitor` client until it hangs up. Allowed-flow events are turned on
/// in the datapath while at least one client asks for them.
pub async fn stream(
    hub: &EventHub,
    verdicts: bool,
    node: &Node,
    mut w: tokio::net::unix::OwnedWriteHalf,
) -> std::io::Result<()> {
    let mut rx = hub.tx.subscribe();
    if verdicts && hub.verdict_subscribers.fetch_add(1, Ordering::AcqRel) == 0 {
        let _ = node
            .datapath
            .maps
            .update_config(|c| c.flags |= CFG_F_VERDICT_EVENTS);
    }
    let result = async {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    if !verdicts && ev.verdict != "drop" {
                        continue;
                    }
                    let mut line = serde_json::to_vec(&*ev).expect("serialize event");
                    line.push(b'\n');
                    w.write_all(&line).await?;
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "monitor client too slow");
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            }
        }
    }
    .await;
    if verdicts && hub.verdict_subscribers.fetch_sub(1, Ordering::AcqRel) == 1 {
        let _ = node
            .datapath
            .maps
            .update_config(|c| c.flags &= !CFG_F_VERDICT_EVENTS);
    }
    result
}
