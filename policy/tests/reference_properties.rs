//! Properties of the reference evaluator that hold for any cluster: isolation is per selected
//! pod, policies only ever add allowances for pods they select, order does not matter, the
//! halves compose, and arbitrary (malformed) policy text never panics.

use std::net::IpAddr;

use proptest::prelude::*;
use serde_json::{Value, json};
use sluice_policy::{
    model::{ClusterState, ContainerPort, Labels, NetworkPolicy, PodInfo, Protocol},
    reference::{allowed, egress_allowed, ingress_allowed},
};

const NAMESPACES: [&str; 2] = ["a", "b"];
const APPS: [&str; 3] = ["web", "db", "cli"];
const OUTSIDE: &str = "192.0.2.1";
const PROBES: [(Protocol, u16); 5] = [
    (Protocol::Tcp, 80),
    (Protocol::Tcp, 85),
    (Protocol::Tcp, 8080),
    (Protocol::Udp, 53),
    (Protocol::Sctp, 80),
];

/// The policy's podSelector, kept in a form the test can evaluate on its own.
#[derive(Clone, Debug)]
enum PodSel {
    Omitted,
    All,
    App(&'static str),
}

#[derive(Clone, Debug)]
struct Policy {
    ns: &'static str,
    sel: PodSel,
    spec: Value,
}

impl Policy {
    fn selects(&self, pod: &PodInfo) -> bool {
        !pod.host_network
            && pod.namespace == self.ns
            && match self.sel {
                PodSel::Omitted | PodSel::All => true,
                PodSel::App(app) => pod.labels.get("app").map(String::as_str) == Some(app),
            }
    }
}

fn pod_strategy() -> impl Strategy<Value = (usize, usize, bool, bool)> {
    (
        0..NAMESPACES.len(),
        0..APPS.len(),
        prop::bool::weighted(0.15),
        any::<bool>(),
    )
}

fn peer_strategy() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(APPS.to_vec())
            .prop_map(|app| json!({ "podSelector": { "matchLabels": { "app": app } } })),
        Just(json!({ "podSelector": {} })),
        Just(json!({ "namespaceSelector": {} })),
        Just(json!({ "namespaceSelector": { "matchLabels": { "team": "x" } } })),
        Just(
            json!({ "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "b" } },
                     "podSelector": { "matchExpressions": [{ "key": "app", "operator": "NotIn", "values": ["db"] }] } })
        ),
        Just(json!({ "ipBlock": { "cidr": "10.0.0.0/16", "except": ["10.0.1.0/24"] } })),
        Just(json!({ "ipBlock": { "cidr": "0.0.0.0/0" } })),
    ]
}

fn port_strategy() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({ "port": 80 })),
        Just(json!({ "port": "http" })),
        Just(json!({ "port": 80, "endPort": 90 })),
        Just(json!({ "protocol": "UDP" })),
        Just(json!({ "port": 53, "protocol": "UDP" })),
    ]
}

fn rule_strategy() -> impl Strategy<Value = Option<Vec<Value>>> {
    let rule = (
        prop::collection::vec(peer_strategy(), 0..3),
        prop::collection::vec(port_strategy(), 0..3),
    )
        .prop_map(|(peers, ports)| json!({ "peers": peers, "ports": ports }));
    prop::option::of(prop::collection::vec(rule, 0..3))
}

fn policy_strategy() -> impl Strategy<Value = Policy> {
    let sel = prop_oneof![
        Just(PodSel::Omitted),
        Just(PodSel::All),
        prop::sample::select(APPS.to_vec()).prop_map(PodSel::App),
    ];
    let types = prop::sample::select(vec![
        None,
        Some(vec!["Ingress"]),
        Some(vec!["Egress"]),
        Some(vec!["Ingress", "Egress"]),
    ]);
    (
        prop::sample::select(NAMESPACES.to_vec()),
        sel,
        types,
        rule_strategy(),
        rule_strategy(),
    )
        .prop_map(|(ns, sel, types, ingress, egress)| {
            let mut spec = serde_json::Map::new();
            match sel {
                PodSel::Omitted => {}
                PodSel::All => drop(spec.insert("podSelector".into(), json!({}))),
                PodSel::App(app) => {
                    drop(spec.insert("podSelector".into(), json!({ "matchLabels": { "app": app } })))
                }
            }
            if let Some(types) = types {
                spec.insert("policyTypes".into(), json!(types));
            }
            let rules = |rules: Vec<Value>, peer_key: &str| -> Value {
                rules
                    .into_iter()
                    .map(|r| json!({ peer_key: r["peers"], "ports": r["ports"] }))
                    .collect()
            };
            if let Some(ingress) = ingress {
                spec.insert("ingress".into(), rules(ingress, "from"));
            }
            if let Some(egress) = egress {
                spec.insert("egress".into(), rules(egress, "to"));
            }
            Policy {
                ns,
                sel,
                spec: Value::Object(spec),
            }
        })
}

fn build(pods: &[(usize, usize, bool, bool)], policies: &[Policy]) -> ClusterState {
    let mut s = ClusterState::default();
    s.namespaces
        .insert("a".into(), Labels::from([("team".to_string(), "x".to_string())]));
    for (i, &(ns, app, host_network, http_on_80)) in pods.iter().enumerate() {
        let name = format!("pod{i}");
        let pod = PodInfo {
            namespace: NAMESPACES[ns].into(),
            name: name.clone(),
            labels: Labels::from([("app".to_string(), APPS[app].to_string())]),
            ips: vec![IpAddr::from([10, 0, i as u8, 1])],
            ports: vec![ContainerPort {
                name: Some("http".into()),
                port: if http_on_80 { 80 } else { 8080 },
                protocol: Protocol::Tcp,
            }],
            host_network,
        };
        s.pods.insert((NAMESPACES[ns].into(), name), pod);
    }
    for (i, p) in policies.iter().enumerate() {
        add(&mut s, p, &format!("p{i}"));
    }
    s
}

fn add(s: &mut ClusterState, p: &Policy, name: &str) {
    let policy: NetworkPolicy = serde_json::from_value(json!({ "spec": p.spec })).expect("generated policy");
    s.policies
        .insert((p.ns.into(), name.into()), std::sync::Arc::new(policy));
}

/// Every address of interest: the pods' and one outside the cluster.
fn addresses(s: &ClusterState) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = s.pods.values().flat_map(|p| p.ips.clone()).collect();
    v.push(OUTSIDE.parse().expect("address"));
    v
}

fn pod_at(s: &ClusterState, ip: IpAddr) -> Option<&PodInfo> {
    s.pods.values().find(|p| p.ips.contains(&ip))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Adding a policy never changes a decision for a pod it does not select: the ingress half of
    /// unselected destinations and the egress half of unselected sources are unchanged, so a
    /// connection between unselected pods that was allowed stays allowed.
    #[test]
    fn adding_a_policy_leaves_unselected_pods_alone(
        pods in prop::collection::vec(pod_strategy(), 1..6),
        policies in prop::collection::vec(policy_strategy(), 0..4),
        extra in policy_strategy(),
    ) {
        let before = build(&pods, &policies);
        let mut after = before.clone();
        add(&mut after, &extra, "extra");
        let ips = addresses(&before);
        for &src in &ips {
            for &dst in &ips {
                let src_free = pod_at(&before, src).is_none_or(|p| !extra.selects(p));
                let dst_free = pod_at(&before, dst).is_none_or(|p| !extra.selects(p));
                for (proto, port) in PROBES {
                    if src_free {
                        prop_assert_eq!(
                            egress_allowed(&before, src, dst, proto, port),
                            egress_allowed(&after, src, dst, proto, port)
                        );
                    }
                    if dst_free {
                        prop_assert_eq!(
                            ingress_allowed(&before, src, dst, proto, port, false),
                            ingress_allowed(&after, src, dst, proto, port, false)
                        );
                    }
                    if src_free && dst_free && allowed(&before, src, dst, proto, port, false) {
                        prop_assert!(allowed(&after, src, dst, proto, port, false));
                    }
                }
            }
        }
    }

    /// A pod selected by no policy allows all ingress; every pod lets its own node in and can
    /// reach itself; `allowed` is exactly the conjunction of its halves.
    #[test]
    fn isolation_and_composition(
        pods in prop::collection::vec(pod_strategy(), 1..6),
        policies in prop::collection::vec(policy_strategy(), 0..5),
    ) {
        let s = build(&pods, &policies);
        let ips = addresses(&s);
        for &dst in &ips {
            let unselected = pod_at(&s, dst).is_none_or(|p| !policies.iter().any(|pol| pol.selects(p)));
            for &src in &ips {
                for (proto, port) in PROBES {
                    let ingress = ingress_allowed(&s, src, dst, proto, port, false);
                    let egress = egress_allowed(&s, src, dst, proto, port);
                    if unselected {
                        prop_assert!(ingress);
                    }
                    prop_assert_eq!(allowed(&s, src, dst, proto, port, false), ingress && egress);
                    prop_assert!(ingress_allowed(&s, src, dst, proto, port, true));
                    if src == dst {
                        prop_assert!(allowed(&s, src, dst, proto, port, false));
                    }
                }
            }
        }
    }

    /// Policy order (their names) is irrelevant.
    #[test]
    fn order_is_irrelevant(
        pods in prop::collection::vec(pod_strategy(), 1..6),
        policies in prop::collection::vec(policy_strategy(), 0..5),
    ) {
        let forward = build(&pods, &policies);
        let mut backward = build(&pods, &[]);
        for (i, p) in policies.iter().enumerate() {
            add(&mut backward, p, &format!("p{}", policies.len() - i));
        }
        let ips = addresses(&forward);
        for &src in &ips {
            for &dst in &ips {
                for (proto, port) in PROBES {
                    prop_assert_eq!(
                        allowed(&forward, src, dst, proto, port, false),
                        allowed(&backward, src, dst, proto, port, false)
                    );
                }
            }
        }
    }

    /// Arbitrary text in CIDRs, ports, protocols and selector operators never panics.
    #[test]
    fn malformed_policies_never_panic(
        cidr in "[0-9a-f:./+-]{0,24}",
        except in "[0-9a-f:./]{0,24}",
        port in prop_oneof![any::<i32>().prop_map(Value::from), "[a-z0-9-]{0,8}".prop_map(Value::from)],
        end_port in prop::option::of(any::<i32>()),
        protocol in prop::option::of("[A-Za-z]{0,5}"),
        operator in "[A-Za-z]{0,12}",
        dst_port in any::<u16>(),
    ) {
        let mut port_entry = json!({ "port": port });
        if let Some(end) = end_port {
            port_entry["endPort"] = json!(end);
        }
        if let Some(protocol) = protocol {
            port_entry["protocol"] = json!(protocol);
        }
        let policy = Policy {
            ns: "a",
            sel: PodSel::All,
            spec: json!({
                "podSelector": { "matchExpressions": [{ "key": "app", "operator": operator, "values": ["web"] }] },
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{ "from": [{ "ipBlock": { "cidr": cidr, "except": [except] } }], "ports": [port_entry] }],
                "egress": [{ "to": [{ "ipBlock": { "cidr": cidr } }], "ports": [port_entry] }]
            }),
        };
        let s = build(&[(0, 0, false, true), (1, 1, false, false)], &[policy]);
        let ips = addresses(&s);
        for &src in &ips {
            for &dst in &ips {
                for proto in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
                    let _ = allowed(&s, src, dst, proto, dst_port, false);
                }
            }
        }
    }
}
