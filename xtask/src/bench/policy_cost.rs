//! What NetworkPolicy costs the traffic of pods it does not select.
//!
//! sluice: one node per rule count N, each with sluiced in manifests mode, a `client` and a
//! `server` pod, and four `other` pods. The server is isolated by one policy that lets the
//! client in (so every new connection takes a policy lookup); N more policies each select one
//! of the other pods and let a distinct `ipBlock` /32 in on a distinct TCP port (so the
//! datapath holds N more allow entries, N ipBlock regions and identities).
//!
//! iptables, as a policy agent of that kind installs it: bridge + host-local node
//! namespaces (br_netfilter is built into this kernel, so bridged pod-to-pod traffic crosses
//! FORWARD), with the conntrack ESTABLISHED accept first, then N rules for the other pods'
//! addresses, then the client's accept and the server's drop. New connections walk the whole
//! list; established packets stop at the first rule. Legacy iptables always, iptables-nft too
//! in full runs.
//!
//! All N levels of a family exist at once, so each round measures them back to back, and
//! every ratio is to N = 0 of the same family in the same round.

use std::{
    fmt::Write as _,
    io::Write as _,
    net::IpAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use super::{
    Bins, Config,
    cni::Pod,
    daemon::Sluiced,
    measure, netns,
    report::{Report, Section, fmt_num, fmt_ratio_range},
    stats,
    topology::Topo,
};

/// Pods the N rules select (spread over them).
pub const OTHER_PODS: usize = 4;

/// `1000` → `1k`, for key names.
pub fn n_label(n: usize) -> String {
    if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// The Namespace and Pod objects: client, server, other0.. with their labels.
pub fn model(extra_pods: &[(String, Value)]) -> String {
    let mut items = vec![json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": { "name": "bench", "labels": { "ns": "bench" } },
    })];
    let mut pods: Vec<(String, Value)> = vec![
        ("client".into(), json!({ "app": "client" })),
        ("server".into(), json!({ "app": "server" })),
    ];
    pods.extend((0..OTHER_PODS).map(|k| (format!("other{k}"), json!({ "other": format!("o{k}") }))));
    pods.extend(extra_pods.iter().cloned());
    for (name, labels) in pods {
        items.push(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": name, "namespace": "bench", "labels": labels },
            "spec": { "containers": [{ "name": "c", "image": "none" }] },
        }));
    }
    list(items)
}

/// The address and port of rule `i` (distinct for every i < 65536).
fn rule_peer(i: usize) -> (String, u16) {
    (
        format!("172.16.{}.{}/32", (i >> 8) & 255, i & 255),
        1024 + (i % 50_000) as u16,
    )
}

fn list(items: Vec<Value>) -> String {
    json!({ "apiVersion": "v1", "kind": "List", "items": items }).to_string()
}

/// sluiced's manifest reader refuses files of more than 250,000 YAML nodes (a policy here is
/// about 25): policies go into files of this many.
const POLICIES_PER_FILE: usize = 1000;

/// The server's policy plus `n` policies selecting the other pods, as (file name, contents).
pub fn policies(n: usize) -> Vec<(String, String)> {
    let base = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": { "name": "server-from-client", "namespace": "bench" },
        "spec": {
            "podSelector": { "matchLabels": { "app": "server" } },
            "policyTypes": ["Ingress"],
            "ingress": [{ "from": [{ "podSelector": { "matchLabels": { "app": "client" } } }] }],
        },
    });
    let mut files = vec![("10-policy-server.json".to_owned(), list(vec![base]))];
    let rules: Vec<Value> = (0..n)
        .map(|i| {
            let (cidr, port) = rule_peer(i);
            json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": { "name": format!("rule{i}"), "namespace": "bench" },
                "spec": {
                    "podSelector": { "matchLabels": { "other": format!("o{}", i % OTHER_PODS) } },
                    "policyTypes": ["Ingress"],
                    "ingress": [{
                        "from": [{ "ipBlock": { "cidr": cidr } }],
                        "ports": [{ "protocol": "TCP", "port": port }],
                    }],
                },
            })
        })
        .collect();
    for (k, chunk) in rules.chunks(POLICIES_PER_FILE).enumerate() {
        files.push((format!("20-rules-{k:03}.json"), list(chunk.to_vec())));
    }
    files
}

/// Write the policy files and wait until sluiced has all `n + 1` policies in force; returns
/// the time from the first write.
pub fn apply_policies(d: &Sluiced, n: usize) -> Result<f64> {
    let rev = d.revision()?;
    let start = Instant::now();
    for (name, text) in policies(n) {
        d.write_manifest(&name, &text)?;
    }
    d.wait_applied(rev, Duration::from_secs(300), |s| {
        s["policies"].as_u64() == Some(n as u64 + 1)
    })?;
    Ok(start.elapsed().as_secs_f64())
}

/// A sluice node with `n` rules in force; returns the topology and how long sluiced took to
/// apply the policies.
fn sluice_level(bins: &Bins, n: usize) -> Result<(Topo, f64)> {
    let mut t = Topo::sluice(bins, "10.244.0.0/16", Some(&model(&[])))?;
    let plugin = t.plugin.clone().context("sluice topology without plugin")?;
    for k in 0..OTHER_PODS {
        t.pods.push(Pod::add(&plugin, &format!("other{k}"))?);
    }
    let d = t.daemon.as_ref().context("sluice topology without daemon")?;
    let apply_s = apply_policies(d, n)?;
    let st = d.status()?;
    let entries = st["policy_entries"].as_u64().unwrap_or(0);
    ensure!(
        entries as usize > n,
        "sluiced holds {entries} policy entries for {n} rules + 1: the rules did not compile as expected"
    );
    eprintln!("bench: sluice with {n} rules: applied in {apply_s:.2}s, {entries} policy entries");
    Ok((t, apply_s))
}

/// `iptables-legacy` or `iptables-nft`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Ipt {
    Legacy,
    Nft,
}

impl Ipt {
    fn tool(self) -> &'static str {
        match self {
            Ipt::Legacy => "iptables-legacy",
            Ipt::Nft => "iptables-nft",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Ipt::Legacy => "iptables",
            Ipt::Nft => "nft",
        }
    }
}

/// The ruleset: conntrack first, N rules for other addresses, the client's accept, the drop.
fn ruleset(n: usize, client: IpAddr, server: IpAddr, subnet_base: &str) -> String {
    let mut s = String::from(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:SLB-POLICY - [0:0]\n\
         -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n-A FORWARD -j SLB-POLICY\n",
    );
    for i in 0..n {
        let (cidr, port) = rule_peer(i);
        // The other pods' addresses: in the node's subnet, never the client's or the server's.
        let other = format!("{subnet_base}.200.{}", 10 + i % OTHER_PODS);
        let _ = writeln!(
            s,
            "-A SLB-POLICY -s {cidr} -d {other}/32 -p tcp -m tcp --dport {port} -j ACCEPT"
        );
    }
    let _ = writeln!(s, "-A SLB-POLICY -s {client}/32 -d {server}/32 -j ACCEPT");
    let _ = writeln!(s, "-A SLB-POLICY -d {server}/32 -j DROP");
    s.push_str("COMMIT\n");
    s
}

/// A bridge node with `n` iptables rules in force.
fn iptables_level(ipt: Ipt, n: usize, subnet: &str) -> Result<Topo> {
    let t = Topo::reference_cni("bridge", &format!("{subnet}.0.0/16"))?;
    let rules = ruleset(n, t.client_ip, t.server_ip, subnet);
    let node = t.node()?;
    let mut child = node
        .cmd(format!("{}-restore", ipt.tool()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {}-restore", ipt.tool()))?;
    child.stdin.take().context("stdin")?.write_all(rules.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "{}-restore failed: {}",
        ipt.tool(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(t)
}

/// Packets the client's accept rule saw: proof that pod traffic crosses the chain.
fn accept_counter(ipt: Ipt, t: &Topo) -> Result<u64> {
    let out = t
        .node()?
        .cmd(ipt.tool())
        .args(["-w", "-L", "SLB-POLICY", "-v", "-n", "-x"])
        .output()
        .with_context(|| format!("spawning {}", ipt.tool()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let client = t.client_ip.to_string();
    text.lines()
        .find(|l| l.contains("ACCEPT") && l.split_whitespace().any(|w| w == client))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .with_context(|| {
            format!(
                "{} -L SLB-POLICY shows no accept rule for the client:\n{text}",
                ipt.tool()
            )
        })
}

/// The policy topologies: sluice levels first, then iptables families.
pub struct PolicyTopos {
    pub sluice: Vec<(usize, Topo)>,
    pub ipt: Vec<(Ipt, usize, Topo)>,
    pub apply_s: Vec<(usize, f64)>,
}

/// The sluice nodes, and the iptables nodes when `iptables`.
pub fn build(cfg: &Config, bins: &Bins, iptables: bool) -> Result<PolicyTopos> {
    let mut p = PolicyTopos {
        sluice: Vec::new(),
        ipt: Vec::new(),
        apply_s: Vec::new(),
    };
    for &n in &cfg.policy_levels {
        netns::check_interrupted()?;
        let (mut t, apply) = sluice_level(bins, n)?;
        t.start_servers(false)?;
        p.apply_s.push((n, apply));
        p.sluice.push((n, t));
    }
    let mut families = Vec::new();
    if iptables {
        families.push(Ipt::Legacy);
    }
    if iptables && cfg.nft {
        families.push(Ipt::Nft);
    }
    for (fi, ipt) in families.into_iter().enumerate() {
        for (li, &n) in cfg.policy_levels.iter().enumerate() {
            netns::check_interrupted()?;
            let subnet = format!("10.{}", 100 + fi * 10 + li);
            let mut t = iptables_level(ipt, n, &subnet)?;
            t.start_servers(false)?;
            let seen = accept_counter(ipt, &t)?;
            if seen == 0 {
                bail!(
                    "{}: no packet of the client crossed FORWARD in the bridge node (br_netfilter off?)",
                    ipt.tool()
                );
            }
            p.ipt.push((ipt, n, t));
        }
    }
    Ok(p)
}

/// Per topology (index into the flat list), per round: (rr, crr).
pub fn measure(cfg: &Config, p: &PolicyTopos, rep: &mut Report) -> Result<()> {
    let mut all: Vec<(String, usize, &Topo)> = Vec::new();
    for (n, t) in &p.sluice {
        all.push(("policy".into(), *n, t));
    }
    for (ipt, n, t) in &p.ipt {
        all.push((ipt.key().into(), *n, t));
    }
    let mut rr: Vec<Vec<f64>> = vec![Vec::new(); all.len()];
    let mut crr: Vec<Vec<f64>> = vec![Vec::new(); all.len()];
    for r in 0..cfg.policy_rounds {
        for crr_round in [false, true] {
            let mut order: Vec<usize> = (0..all.len()).collect();
            let k = r % all.len().max(1);
            order.rotate_left(k);
            for i in order {
                netns::check_interrupted()?;
                let (fam, n, t) = &all[i];
                if crr_round {
                    let v = measure::tcp_crr(&t.client, t.server_ip, cfg.policy_run)
                        .with_context(|| format!("{fam} N={n} crr"))?;
                    crr[i].push(v);
                } else {
                    let v = measure::tcp_rr(&t.client, t.server_ip, cfg.policy_run)
                        .with_context(|| format!("{fam} N={n} rr"))?;
                    rr[i].push(v.per_s);
                }
            }
        }
        eprintln!("bench: policy round {}/{} done", r + 1, cfg.policy_rounds);
    }
    let mut rows = Vec::new();
    for (i, (fam, n, _)) in all.iter().enumerate() {
        let base = all
            .iter()
            .position(|(f, m, _)| f == fam && *m == 0)
            .context("no N=0 level")?;
        let rr_ratio = stats::median_ratio(&rr[i], &rr[base]);
        let crr_ratio = stats::median_ratio(&crr[i], &crr[base]);
        let nl = n_label(*n);
        rep.num(&format!("{fam}{nl}_rr_vs_0"), rr_ratio);
        rep.num(&format!("{fam}{nl}_crr_vs_0"), crr_ratio);
        rep.num(&format!("{fam}{nl}_rr_per_s"), stats::median(&rr[i]));
        rep.num(&format!("{fam}{nl}_crr_per_s"), stats::median(&crr[i]));
        let family = match fam.as_str() {
            "policy" => "sluice (eBPF)",
            "iptables" => "iptables-legacy",
            _ => "iptables-nft",
        };
        rows.push(vec![
            family.to_owned(),
            n.to_string(),
            fmt_ratio_range(rr_ratio, stats::ratio_range(&rr[i], &rr[base])),
            fmt_ratio_range(crr_ratio, stats::ratio_range(&crr[i], &crr[base])),
            fmt_num(stats::median(&rr[i])),
            fmt_num(stats::median(&crr[i])),
        ]);
    }
    for (n, s) in &p.apply_s {
        rep.num(&format!("policy{}_apply_s", n_label(*n)), *s);
    }
    rep.sections.push(Section {
        title: "Policy cost: rules selecting other pods (ratio to N = 0 of the same family; median, min-max)"
            .into(),
        note: format!(
            "{} rounds, interleaved; RR = 64 B request/response on one TCP connection, CRR = new \
             connection per request. sluice apply time of the N rules: {}.",
            cfg.policy_rounds,
            p.apply_s
                .iter()
                .map(|(n, s)| format!("N={n} {s:.2}s"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        header: ["datapath", "N", "RR vs 0", "CRR vs 0", "RR/s", "CRR/s"]
            .map(String::from)
            .to_vec(),
        rows,
    });
    Ok(())
}

/// `iptables-legacy -S` works here (the tables exist in a fresh namespace).
pub fn preflight(cfg: &Config) -> Result<()> {
    let mut tools = vec!["iptables-legacy-restore"];
    if cfg.nft {
        tools.push("iptables-nft-restore");
    }
    for t in tools {
        let ok = Command::new(t)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        ensure!(ok, "{t} is missing (package iptables)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(n_label(0), "0");
        assert_eq!(n_label(100), "100");
        assert_eq!(n_label(1000), "1k");
        assert_eq!(n_label(10_000), "10k");
    }

    #[test]
    fn manifests_are_json_lists() {
        let files = policies(2500);
        assert_eq!(files.len(), 4);
        let items: usize = files
            .iter()
            .map(|(_, t)| {
                let v: Value = serde_json::from_str(t).expect("json");
                v["items"].as_array().map(Vec::len).unwrap_or(0)
            })
            .sum();
        assert_eq!(items, 2501);
        let m: Value = serde_json::from_str(&model(&[])).expect("json");
        assert_eq!(m["items"].as_array().map(Vec::len), Some(3 + OTHER_PODS));
    }

    #[test]
    fn ruleset_has_every_rule() {
        let r = ruleset(
            5,
            "10.1.0.2".parse().expect("ip"),
            "10.1.0.3".parse().expect("ip"),
            "10.1",
        );
        assert_eq!(r.lines().filter(|l| l.starts_with("-A SLB-POLICY")).count(), 7);
        assert!(r.contains("-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"));
    }
}
