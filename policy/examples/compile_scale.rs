//! How long compiling takes at scale: `cargo run --release -p sluice-policy --example
//! compile_scale -- [POLICIES] [ENDPOINTS]` (defaults 10,000 and 1,000). Each policy selects
//! one of 20 label groups and lets one /32 ipBlock in on one port, the shape of
//! `cargo xtask bench`'s policy-cost run.

use std::{net::IpAddr, time::Instant};

use serde_json::json;
use sluice_policy::{
    compile::{Input, LocalEndpoint, compile},
    identity::Identities,
    model::{ClusterState, NetworkPolicy, PodInfo},
};

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (n_pol, n_ep) = (
        args.first().copied().unwrap_or(10_000),
        args.get(1).copied().unwrap_or(1_000),
    );
    let mut s = ClusterState::default();
    let mut eps = Vec::new();
    for i in 0..n_ep {
        let name = format!("p{i}");
        let ip: IpAddr = format!("10.{}.{}.{}", 200 + i / 65536, (i / 256) % 256, i % 256)
            .parse()
            .unwrap();
        s.pods.insert(
            ("bench".into(), name.clone()),
            PodInfo {
                namespace: "bench".into(),
                name: name.clone(),
                labels: [("other".to_string(), format!("o{}", i % 20))].into(),
                ips: vec![ip],
                ports: vec![],
                host_network: false,
            },
        );
        eps.push(LocalEndpoint {
            ep_id: i as u32,
            namespace: "bench".into(),
            name,
            ips: vec![ip],
        });
    }
    for i in 0..n_pol {
        let p: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": format!("rule{i}"), "namespace": "bench"},
            "spec": {
                "podSelector": {"matchLabels": {"other": format!("o{}", i % 20)}},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"ipBlock": {"cidr": format!("172.{}.{}.{}/32", 16 + i / 65536, (i / 256) % 256, i % 256)}}],
                             "ports": [{"protocol": "TCP", "port": 1000 + (i % 50000)}]}],
            },
        }))
        .unwrap();
        s.policies
            .insert(("bench".into(), format!("rule{i}")), std::sync::Arc::new(p));
    }
    let mut ids = Identities::default();
    for round in 0..2 {
        let t = Instant::now();
        let c = compile(
            &Input {
                state: &s,
                endpoints: &eps,
                node_ips: &[],
            },
            &mut ids,
        );
        println!(
            "round {round}: {n_pol} policies, {n_ep} endpoints: {:.0} ms, {} entries, {} ipcache, {} identities",
            t.elapsed().as_secs_f64() * 1e3,
            c.entries.len(),
            c.ipcache.len(),
            c.identities.len()
        );
    }
}
