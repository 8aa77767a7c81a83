//! Prometheus metrics (text exposition at `/metrics`) and health checks (`/healthz`,
//! `/readyz`) on `--metrics-address`. Request counters and latencies are recorded as requests
//! are served; datapath figures (drops, program runs, map fill) are read at scrape time.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Bytes, service::service_fn};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use sluice_common::event::drop_reason;

use crate::node::Node;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpResult {
    pub operation: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Operation {
    pub operation: String,
}

/// Metrics recorded as things happen (cheap to clone: shared handles).
#[derive(Clone)]
pub struct Recorded {
    /// CNI operations as the daemon sees them: `add` (allocate + register), `del`
    /// (teardown), `check`, `gc`.
    pub cni_ops: Family<OpResult, Counter>,
    pub cni_seconds: Family<Operation, Histogram>,
    pub policy_apply_seconds: Histogram,
}

impl Default for Recorded {
    fn default() -> Self {
        Self {
            cni_ops: Family::default(),
            cni_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_25, 2.0, 14))
            }),
            policy_apply_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
        }
    }
}

impl Recorded {
    pub fn observe(&self, operation: &str, ok: bool, seconds: f64) {
        self.cni_ops
            .get_or_create(&OpResult {
                operation: operation.into(),
                result: if ok { "success" } else { "error" }.into(),
            })
            .inc();
        self.cni_seconds
            .get_or_create(&Operation {
                operation: operation.into(),
            })
            .observe(seconds);
    }
}

/// Datapath and daemon figures, read at each scrape.
struct Scraped(Arc<Node>);

impl std::fmt::Debug for Scraped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scraped")
    }
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> Result<(), std::fmt::Error> {
    ConstGauge::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for Scraped {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let node = &self.0;
        let status = crate::status::status(node);
        gauge(
            &mut e,
            "sluice_endpoints",
            "Pods wired on this node.",
            status.endpoints as i64,
        )?;
        gauge(
            &mut e,
            "sluice_endpoints_on_clsact",
            "Endpoints not yet moved to tcx links.",
            status.clsact_endpoints as i64,
        )?;
        {
            let mut m = e.encode_descriptor(
                "sluice_ipam_addresses",
                "Pod addresses by pool and state.",
                None,
                MetricType::Gauge,
            )?;
            for p in &status.pools {
                for (state, v) in [("used", p.used), ("free", p.free)] {
                    let labels = [("pool", p.cidr.as_str()), ("state", state)];
                    ConstGauge::new(v as i64).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut m = e.encode_descriptor(
                "sluice_map_entries",
                "Entries in each datapath map.",
                None,
                MetricType::Gauge,
            )?;
            for f in &status.maps {
                ConstGauge::new(f.entries as i64).encode(m.encode_family(&[("map", f.name.as_str())])?)?;
            }
        }
        {
            let mut m = e.encode_descriptor(
                "sluice_map_capacity",
                "Capacity of each datapath map.",
                None,
                MetricType::Gauge,
            )?;
            for f in &status.maps {
                ConstGauge::new(f.capacity as i64).encode(m.encode_family(&[("map", f.name.as_str())])?)?;
            }
        }
        gauge(
            &mut e,
            "sluice_conntrack_entries",
            "Live conntrack entries at the last garbage collection.",
            status
                .maps
                .iter()
                .find(|m| m.name == sluice_common::maps::CT)
                .map(|m| m.entries as i64)
                .unwrap_or(0),
        )?;
        gauge(
            &mut e,
            "sluice_policies",
            "NetworkPolicies known.",
            status.policies as i64,
        )?;
        gauge(
            &mut e,
            "sluice_policy_identities",
            "Security identities in use.",
            status.identities as i64,
        )?;
        gauge(
            &mut e,
            "sluice_policy_entries",
            "Allow entries in the policy map.",
            status.policy_entries as i64,
        )?;
        // Drops by reason, summed over endpoints (the datapath's own per-CPU counters).
        let mut drops = [0u64; drop_reason::COUNT];
        for ep in node.endpoints() {
            for (name, v) in &ep.counters.drops {
                if let Some(i) = drop_reason::NAMES.iter().position(|n| n == name) {
                    drops[i] += v;
                }
            }
        }
        {
            let mut m = e.encode_descriptor(
                "sluice_drops",
                "Packets dropped by the datapath, by reason.",
                None,
                MetricType::Counter,
            )?;
            for (i, v) in drops.iter().enumerate().skip(1) {
                ConstCounter::new(*v).encode(m.encode_family(&[("reason", drop_reason::NAMES[i])])?)?;
            }
        }
        let g = &status.datapath_counters;
        {
            let mut m = e.encode_descriptor(
                "sluice_bpf_program_runs",
                "Runs of each eBPF program.",
                None,
                MetricType::Counter,
            )?;
            for (prog, key) in [("from_pod", "from_pod_runs"), ("to_pod", "to_pod_runs")] {
                ConstCounter::new(g.get(key).copied().unwrap_or(0))
                    .encode(m.encode_family(&[("program", prog)])?)?;
            }
        }
        for (name, key, help) in [
            (
                "sluice_conntrack_created",
                "ct_created",
                "Conntrack entries created.",
            ),
            (
                "sluice_conntrack_insert_failures",
                "ct_insert_failed",
                "Conntrack inserts refused (table full).",
            ),
            (
                "sluice_policy_lookups",
                "policy_lookups",
                "Policy map lookups (new flows only).",
            ),
            (
                "sluice_events_lost",
                "events_lost",
                "Flow events lost (ring buffer full).",
            ),
        ] {
            ConstCounter::new(g.get(key).copied().unwrap_or(0)).encode(e.encode_descriptor(
                name,
                help,
                None,
                MetricType::Counter,
            )?)?;
        }
        let rss = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<i64>().ok())
            })
            .unwrap_or(0);
        gauge(
            &mut e,
            "process_resident_memory_bytes",
            "Resident memory of sluiced.",
            rss * 1024,
        )?;
        gauge(
            &mut e,
            "sluice_ready",
            "1 when sluiced serves its socket.",
            i64::from(node.is_ready()),
        )?;
        Ok(())
    }
}

pub fn registry(node: Arc<Node>) -> Registry {
    let mut r = Registry::default();
    let rec = node.metrics.clone();
    r.register(
        "sluice_cni_operations",
        "CNI operations served (add, del, check, gc), by result.",
        rec.cni_ops,
    );
    r.register(
        "sluice_cni_operation_duration_seconds",
        "Daemon-side duration of CNI operations (add: allocate to register, del: teardown).",
        rec.cni_seconds,
    );
    r.register(
        "sluice_policy_apply_duration_seconds",
        "Compiling and writing policy to the maps.",
        rec.policy_apply_seconds,
    );
    r.register_collector(Box::new(Scraped(node)));
    r
}

fn reply(code: StatusCode, body: String, content_type: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

/// Serve until the daemon stops.
pub async fn serve(addr: SocketAddr, node: Arc<Node>) {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot serve metrics");
            return;
        }
    };
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    let registry = Arc::new(registry(node.clone()));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (registry, node) = (registry.clone(), node.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (registry, node) = (registry.clone(), node.clone());
                async move {
                    Ok::<_, std::convert::Infallible>(match req.uri().path() {
                        "/metrics" => {
                            let mut text = String::new();
                            match prometheus_client::encoding::text::encode(&mut text, &registry) {
                                Ok(()) => reply(
                                    StatusCode::OK,
                                    text,
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                ),
                                Err(_) => reply(
                                    StatusCode::INTERNAL_SERVER_ERROR,
                                    "encoding failed\n".into(),
                                    "text/plain",
                                ),
                            }
                        }
                        "/healthz" => reply(StatusCode::OK, "ok\n".into(), "text/plain"),
                        "/readyz" if node.is_ready() => reply(StatusCode::OK, "ready\n".into(), "text/plain"),
                        "/readyz" => {
                            reply(StatusCode::SERVICE_UNAVAILABLE, "starting\n".into(), "text/plain")
                        }
                        _ => reply(StatusCode::NOT_FOUND, "not found\n".into(), "text/plain"),
                    })
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
    }
}
