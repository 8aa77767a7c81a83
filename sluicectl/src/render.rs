//! Human-readable tables.

use sluice_api::{EndpointInfo, FlowEventInfo, LeaseInfo, PoolStatus, Status};

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

pub fn status(s: &Status) {
    println!(
        "sluiced {}  ready: {}  node: {}  uptime: {}s",
        s.version, s.ready, s.node_name, s.uptime_s
    );
    println!(
        "kernel {}  attach: {}  features: {}",
        s.kernel,
        s.attach_mode,
        s.features.join(", ")
    );
    println!(
        "routing: {}  endpoints: {}  policies: {}  identities: {}",
        s.routing, s.endpoints, s.policies, s.identities
    );
    for p in &s.pools {
        println!(
            "pool {:<22} gateway {:<18} used {:>6}  free {}",
            p.cidr,
            p.gateway.to_string(),
            p.used,
            p.free
        );
    }
    println!("{:<16} {:>10} {:>10} {:>6}", "MAP", "ENTRIES", "CAPACITY", "FILL");
    for m in &s.maps {
        let pct = if m.capacity > 0 {
            m.entries as f64 * 100.0 / m.capacity as f64
        } else {
            0.0
        };
        println!(
            "{:<16} {:>10} {:>10} {:>5.1}%",
            m.name, m.entries, m.capacity, pct
        );
    }
    let counters: Vec<String> = s
        .datapath_counters
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!("datapath: {}", counters.join(" "));
}

pub fn endpoints(eps: &[EndpointInfo]) {
    println!(
        "{:<4} {:<28} {:<32} {:<15} {:>9} {:>10} {:>9} {:>10} {:>9}  DROPS",
        "EP", "POD", "ADDRESSES", "HOST IF", "TX PKTS", "TX BYTES", "RX PKTS", "RX BYTES", "REDIRECT"
    );
    for e in eps {
        let pod = e
            .pod
            .as_ref()
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .unwrap_or_else(|| e.attachment.container_id.clone());
        let ips: Vec<String> = e.ips.iter().map(|i| i.to_string()).collect();
        let drops: Vec<String> = e.counters.drops.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut iso = String::new();
        if e.ingress_isolated {
            iso.push_str(" [ingress isolated]");
        }
        if e.egress_isolated {
            iso.push_str(" [egress isolated]");
        }
        println!(
            "{:<4} {:<28} {:<32} {:<15} {:>9} {:>10} {:>9} {:>10} {:>9}  {}{}",
            e.ep_id,
            pod,
            ips.join(","),
            e.host_ifname,
            e.counters.tx_packets,
            human_bytes(e.counters.tx_bytes),
            e.counters.rx_packets,
            human_bytes(e.counters.rx_bytes),
            e.counters.tx_redirected,
            if drops.is_empty() {
                "-".into()
            } else {
                drops.join(" ")
            },
            iso
        );
    }
}

pub fn ipam(pools: &[PoolStatus], leases: &[LeaseInfo]) {
    for p in pools {
        println!(
            "pool {}  gateway {}  used {}  free {}",
            p.cidr, p.gateway, p.used, p.free
        );
    }
    println!(
        "{:<40} {:<28} {:<40} SINCE (unix)",
        "ADDRESS", "POD", "ATTACHMENT"
    );
    for l in leases {
        let pod = l
            .pod
            .as_ref()
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<40} {:<28} {:<40} {}",
            l.address.to_string(),
            pod,
            l.attachment.to_string(),
            l.allocated_at
        );
    }
}

/// `sluicectl policy`: the daemon's explanation (see `sluiced`'s `policy::explain`) as text:
/// the pod, what selects it, whether each direction is isolated, and the allowed peers the
/// datapath holds entries for.
pub fn policy(v: &serde_json::Value) {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let labels: Vec<String> = v["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    println!("pod {}  labels {{{}}}", s(&v["pod"]), labels.join(","));
    if v["known"] != true {
        println!(
            "  no Pod object known for it (no labels: only policies with an empty podSelector select it)"
        );
    }
    if v["local"] != true {
        println!("  not on this node: nothing in this node's datapath is keyed by it");
    } else if let Some(ids) = v["identities"].as_object() {
        let ids: Vec<String> = ids.iter().map(|(ip, id)| format!("{ip} -> {id}")).collect();
        println!("  endpoint {}  identities {}", v["ep_id"], ids.join(", "));
    }
    let policies = v["policies"].as_array().cloned().unwrap_or_default();
    if policies.is_empty() {
        println!("selected by: no policy (all traffic allowed both ways)");
    } else {
        println!("selected by:");
        for p in &policies {
            let types: Vec<String> = p["policyTypes"]
                .as_array()
                .map(|a| a.iter().map(&s).collect())
                .unwrap_or_default();
            println!("  {:<40} {}", s(&p["name"]), types.join(","));
        }
    }
    if v["local"] != true {
        return;
    }
    let iso = |b: &serde_json::Value| {
        if *b == true {
            "isolated: only what is listed below"
        } else {
            "not isolated: everything allowed"
        }
    };
    println!("ingress: {}", iso(&v["ingress_isolated"]));
    println!("egress:  {}", iso(&v["egress_isolated"]));
    let allowed = v["allowed"].as_array().cloned().unwrap_or_default();
    println!(
        "allowed peers ({} datapath entries; replies of allowed connections pass by conntrack):",
        v["datapath_entries"]
    );
    if allowed.is_empty() {
        println!("  none");
        return;
    }
    println!("  {:<8} {:<50} {:<24} POLICY", "DIR", "PEER", "PORTS");
    for a in &allowed {
        let ports: Vec<String> = a["ports"]
            .as_array()
            .map(|p| p.iter().map(&s).collect())
            .unwrap_or_default();
        println!(
            "  {:<8} {:<50} {:<24} {}",
            s(&a["direction"]),
            s(&a["peer"]),
            ports.join(","),
            s(&a["policy"])
        );
    }
}

pub fn event(e: &FlowEventInfo) -> String {
    let secs = e.time_ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let ports = |ip: &std::net::IpAddr, p: u16| {
        if p == 0 {
            ip.to_string()
        } else if ip.is_ipv6() {
            format!("[{ip}]:{p}")
        } else {
            format!("{ip}:{p}")
        }
    };
    let why = if e.verdict == "drop" {
        format!("DROP ({})", e.reason)
    } else if e.policy.is_empty() {
        "ALLOW".to_owned()
    } else {
        format!("ALLOW by {}", e.policy)
    };
    format!(
        "{h:02}:{m:02}:{s:02}.{:03} {:<22} {:<7} {} {} -> {} {}",
        e.time_ms % 1000,
        why,
        e.direction,
        e.proto,
        ports(&e.src, e.sport),
        ports(&e.dst, e.dport),
        e.pod
    )
}
