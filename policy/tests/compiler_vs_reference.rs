//! The compiler, through the same lookups the datapath does, must agree with the reference
//! evaluator on every connection of random clusters under random policies. All pods are on
//! the compiling node (so both the egress and the ingress half are decided here).

use std::{collections::BTreeMap, net::IpAddr};

use proptest::prelude::*;
use serde_json::{Value, json};
use sluice_policy::{
    compile::{self, Input, LocalEndpoint},
    identity::Identities,
    model::{ClusterState, ContainerPort, Labels, NetworkPolicy, PodInfo, Protocol},
    reference,
};

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PORTS: [u16; 6] = [53, 80, 81, 443, 8080, 9090];
const NODE_IP: &str = "10.244.0.1";
const OUTSIDE: [&str; 4] = ["192.168.7.7", "10.244.9.9", "203.0.113.5", "fd00::99"];

fn labels(v: &[(&str, &str)]) -> Labels {
    v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn arb_labels() -> impl Strategy<Value = Labels> {
    (
        prop::option::of(prop::sample::select(vec!["a", "b", "c"])),
        prop::option::of(prop::sample::select(vec!["web", "db"])),
    )
        .prop_map(|(app, tier)| {
            let mut l = Labels::new();
            if let Some(a) = app {
                l.insert("app".into(), a.into());
            }
            if let Some(t) = tier {
                l.insert("tier".into(), t.into());
            }
            l
        })
}

fn arb_ports() -> impl Strategy<Value = Vec<ContainerPort>> {
    prop::collection::vec(
        (
            prop::sample::select(vec!["http", "dns", "metrics"]),
            prop::sample::select(PORTS.to_vec()),
            prop::sample::select(vec![Protocol::Tcp, Protocol::Udp]),
        ),
        0..3,
    )
    .prop_map(|v| {
        v.into_iter()
            .map(|(n, p, pr)| ContainerPort {
                name: Some(n.into()),
                port: p,
                protocol: pr,
            })
            .collect()
    })
}

fn arb_selector() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({})),
        prop::sample::select(vec!["a", "b", "c"]).prop_map(|a| json!({"matchLabels": {"app": a}})),
        prop::sample::select(vec!["web", "db"])
            .prop_map(|t| json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": [t]}]})),
        prop::sample::select(vec!["a", "b"])
            .prop_map(|a| json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": [a]}]})),
        Just(json!({"matchExpressions": [{"key": "tier", "operator": "Exists"}]})),
        Just(json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]})),
    ]
}

fn arb_ns_selector() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({})),
        prop::sample::select(vec!["red", "blue"]).prop_map(|t| json!({"matchLabels": {"team": t}})),
        prop::sample::select(NAMESPACES.to_vec())
            .prop_map(|n| json!({"matchLabels": {"kubernetes.io/metadata.name": n}})),
    ]
}

fn arb_block() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({"cidr": "10.244.0.0/16"})),
        Just(json!({"cidr": "10.244.0.0/16", "except": ["10.244.1.0/24"]})),
        Just(json!({"cidr": "10.244.1.0/24"})),
        Just(json!({"cidr": "10.244.2.0/25", "except": ["10.244.2.0/28"]})),
        Just(json!({"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]})),
        Just(json!({"cidr": "192.168.0.0/16"})),
        Just(json!({"cidr": "::/0"})),
        Just(json!({"cidr": "fd00::/64", "except": ["fd00::/120"]})),
    ]
}

fn arb_peer() -> impl Strategy<Value = Value> {
    prop_oneof![
        arb_selector().prop_map(|s| json!({"podSelector": s})),
        arb_ns_selector().prop_map(|s| json!({"namespaceSelector": s})),
        (arb_selector(), arb_ns_selector())
            .prop_map(|(p, n)| json!({"podSelector": p, "namespaceSelector": n})),
        arb_block().prop_map(|b| json!({"ipBlock": b})),
    ]
}

fn arb_port() -> impl Strategy<Value = Value> {
    let proto = prop::option::of(prop::sample::select(vec!["TCP", "UDP", "SCTP"]));
    prop_oneof![
        proto.clone().prop_map(|p| json!({"protocol": p})),
        (proto.clone(), prop::sample::select(PORTS.to_vec()))
            .prop_map(|(p, n)| json!({"protocol": p, "port": n})),
        (
            proto.clone(),
            prop::sample::select(vec!["http", "dns", "metrics", "nope"])
        )
            .prop_map(|(p, n)| json!({"protocol": p, "port": n})),
        (proto, prop::sample::select(PORTS.to_vec()), 0u16..2000)
            .prop_map(|(p, n, span)| json!({"protocol": p, "port": n, "endPort": n.saturating_add(span)})),
    ]
}

fn arb_rule(key: &'static str) -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop::collection::vec(arb_peer(), 0..3)),
        prop::option::of(prop::collection::vec(arb_port(), 0..3)),
    )
        .prop_map(move |(peers, ports)| {
            let mut r = serde_json::Map::new();
            if let Some(p) = peers {
                r.insert(key.into(), json!(p));
            }
            if let Some(p) = ports {
                r.insert("ports".into(), json!(p));
            }
            Value::Object(r)
        })
}

fn arb_policy() -> impl Strategy<Value = (String, NetworkPolicy)> {
    (
        prop::sample::select(NAMESPACES.to_vec()),
        arb_selector(),
        prop::sample::select(vec![
            None,
            Some(vec!["Ingress"]),
            Some(vec!["Egress"]),
            Some(vec!["Ingress", "Egress"]),
        ]),
        prop::option::of(prop::collection::vec(arb_rule("from"), 0..3)),
        prop::option::of(prop::collection::vec(arb_rule("to"), 0..3)),
    )
        .prop_map(|(ns, sel, types, ingress, egress)| {
            let mut spec = serde_json::Map::new();
            spec.insert("podSelector".into(), sel);
            if let Some(t) = types {
                spec.insert("policyTypes".into(), json!(t));
            }
            if let Some(i) = ingress {
                spec.insert("ingress".into(), json!(i));
            }
            if let Some(e) = egress {
                spec.insert("egress".into(), json!(e));
            }
            let p: NetworkPolicy =
                serde_json::from_value(json!({"metadata": {"name": "p", "namespace": ns}, "spec": spec}))
                    .unwrap();
            (ns.to_string(), p)
        })
}

fn arb_cluster() -> impl Strategy<Value = ClusterState> {
    (
        prop::collection::vec((0usize..3, arb_labels(), arb_ports(), any::<bool>()), 1..7),
        prop::collection::vec(arb_policy(), 0..5),
        prop::sample::select(vec!["red", "blue"]),
    )
        .prop_map(|(pods, policies, xteam)| {
            let mut s = ClusterState::default();
            s.namespaces.insert("x".into(), labels(&[("team", xteam)]));
            s.namespaces.insert("y".into(), labels(&[("team", "blue")]));
            for (i, (ns, l, ports, v6)) in pods.into_iter().enumerate() {
                let mut ips: Vec<IpAddr> = vec![format!("10.244.{}.{}", 1 + ns, 10 + i).parse().unwrap()];
                if v6 {
                    ips.push(format!("fd00::{:x}", 0x100 + i).parse().unwrap());
                }
                let name = format!("p{i}");
                s.pods.insert(
                    (NAMESPACES[ns].into(), name.clone()),
                    PodInfo {
                        namespace: NAMESPACES[ns].into(),
                        name,
                        labels: l,
                        ips,
                        ports,
                        host_network: false,
                    },
                );
            }
            for (i, (ns, mut p)) in policies.into_iter().enumerate() {
                let name = format!("pol{i}");
                p.metadata.name = Some(name.clone());
                s.policies.insert((ns, name), std::sync::Arc::new(p));
            }
            s
        })
}

fn all_addresses(s: &ClusterState) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = s.pods.values().flat_map(|p| p.ips.clone()).collect();
    v.extend(OUTSIDE.iter().map(|a| a.parse::<IpAddr>().unwrap()));
    v.push(NODE_IP.parse().unwrap());
    v
}

fn compile_all(s: &ClusterState, ids: &mut Identities) -> compile::Compiled {
    let eps: Vec<LocalEndpoint> = s
        .pods
        .values()
        .enumerate()
        .map(|(i, p)| LocalEndpoint {
            ep_id: i as u32,
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            ips: p.ips.clone(),
        })
        .collect();
    let node: [IpAddr; 1] = [NODE_IP.parse().unwrap()];
    compile::compile(
        &Input {
            state: s,
            endpoints: &eps,
            node_ips: &node,
        },
        ids,
    )
}

static CHECKED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static DENIED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn check_all(s: &ClusterState, c: &compile::Compiled) -> Result<(), TestCaseError> {
    use std::sync::atomic::Ordering::Relaxed;
    let addrs = all_addresses(s);
    let node: IpAddr = NODE_IP.parse().unwrap();
    for src in &addrs {
        for dst in &addrs {
            if src.is_ipv4() != dst.is_ipv4() || src == dst {
                continue;
            }
            for proto in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
                for port in PORTS.iter().copied().chain([1000, 1500]) {
                    let from_node = *src == node;
                    let want = reference::allowed(s, *src, *dst, proto, port, from_node);
                    let got = c.decide(*src, *dst, proto, port, from_node);
                    CHECKED.fetch_add(1, Relaxed);
                    if !want {
                        DENIED.fetch_add(1, Relaxed);
                    }
                    prop_assert_eq!(
                        got,
                        want,
                        "{} -> {} {:?}/{}\npolicies: {}",
                        src,
                        dst,
                        proto,
                        port,
                        serde_json::to_string(&s.policies.values().map(|p| &**p).collect::<Vec<_>>())
                            .unwrap()
                    );
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn compiled_lookups_agree_with_the_reference(s in arb_cluster()) {
        let c = compile_all(&s, &mut Identities::default());
        check_all(&s, &c)?;
    }

    /// Recompiling after a change (with the same identity allocator, as the daemon does)
    /// gives the same answers as compiling from scratch.
    #[test]
    fn incremental_recompilation_agrees(a in arb_cluster(), b in arb_cluster()) {
        let mut ids = Identities::default();
        let _ = compile_all(&a, &mut ids);
        let c = compile_all(&b, &mut ids);
        check_all(&b, &c)?;
    }
}

/// The generator must produce both outcomes in quantity, or the agreement above means little.
#[test]
fn the_random_cases_exercise_allows_and_denials() {
    use std::sync::atomic::Ordering::Relaxed;
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 100,
        ..ProptestConfig::default()
    });
    let before = (CHECKED.load(Relaxed), DENIED.load(Relaxed));
    runner
        .run(&arb_cluster(), |s| {
            let c = compile_all(&s, &mut Identities::default());
            check_all(&s, &c)
        })
        .unwrap();
    let checked = CHECKED.load(Relaxed) - before.0;
    let denied = DENIED.load(Relaxed) - before.1;
    eprintln!("checked {checked} connections, {denied} denied");
    assert!(checked > 10_000, "only {checked} connections checked");
    assert!(
        denied * 10 > checked,
        "too few denials ({denied} of {checked}) to test anything"
    );
    assert!(
        denied * 10 < checked * 9,
        "too few allows ({} of {checked})",
        checked - denied
    );
}

#[test]
fn identities_are_shared_by_pods_alike() {
    let mut s = ClusterState::default();
    for i in 0..10 {
        let name = format!("web-{i}");
        s.pods.insert(
            ("x".into(), name.clone()),
            PodInfo {
                namespace: "x".into(),
                name,
                labels: labels(&[("app", "web")]),
                ips: vec![format!("10.244.1.{}", 10 + i).parse().unwrap()],
                ports: vec![],
                host_network: false,
            },
        );
    }
    let c = compile_all(&s, &mut Identities::default());
    let pod_ids: std::collections::BTreeSet<u32> = c
        .endpoints
        .values()
        .flat_map(|e| e.identities.values().copied())
        .collect();
    assert_eq!(pod_ids.len(), 1, "ten alike pods, one identity");
    let _: BTreeMap<(), ()> = BTreeMap::new();
}
