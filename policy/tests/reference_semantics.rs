//! The reference evaluator against the NetworkPolicy semantics it implements, one or more
//! tests per rule. Section comments refer to these rules:
//!
//! 1. isolation: a pod is isolated in a direction only by policies of its own namespace that
//!    select it and whose policyTypes include that direction;
//! 2. policyTypes defaults (Ingress always; Egress only with a non-empty egress list);
//! 3. policies are additive; 4. a connection needs egress of the source AND ingress of the
//!    destination;
//! 5. rules: none = deny, `{}` = all, no `from`/`to` = any peer, no `ports` = any port;
//! 6. peers: podSelector (own namespace), namespaceSelector, both = AND, list = OR, ipBlock
//!    (any address, family-bound, with except);
//! 7. label selectors; 8. ports: default TCP, named ports on the destination pod, endPort;
//! 9. protocol isolation; 10. traffic from the node; 11. hostNetwork pods (and self traffic).

use std::net::IpAddr;

use serde_json::{Value, json};
use sluice_policy::{
    model::{ClusterState, ContainerPort, Labels, NetworkPolicy, PodInfo, Protocol},
    reference::{allowed, egress_allowed, ingress_allowed},
};

// Addresses of the fixture cluster.
const PROD_WEB: &str = "10.0.1.1";
const PROD_WEB6: &str = "fd00::1:1";
const PROD_DB: &str = "10.0.1.2";
const PROD_CLIENT: &str = "10.0.1.3";
const DEV_WEB: &str = "10.0.2.1";
const DEV_CLIENT: &str = "10.0.2.3";
const KUBE_DNS: &str = "10.0.3.10";
const NODE: &str = "172.16.0.1";
const OUTSIDE: &str = "192.0.2.10";
const OUTSIDE6: &str = "2001:db8::10";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn port(name: &str, port: u16, protocol: Protocol) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        port,
        protocol,
    }
}

fn add_pod<'a>(
    state: &'a mut ClusterState,
    ns: &str,
    name: &str,
    l: &[(&str, &str)],
    ips: &[&str],
) -> &'a mut PodInfo {
    let pod = PodInfo {
        namespace: ns.into(),
        name: name.into(),
        labels: labels(l),
        ips: ips.iter().map(|s| ip(s)).collect(),
        ports: vec![],
        host_network: false,
    };
    let key = (ns.to_string(), name.to_string());
    state.pods.insert(key.clone(), pod);
    state.pods.get_mut(&key).expect("just inserted")
}

fn add_policy(state: &mut ClusterState, ns: &str, name: &str, spec: Value) {
    let policy: NetworkPolicy =
        serde_json::from_value(json!({ "metadata": { "name": name, "namespace": ns }, "spec": spec }))
            .expect("test policy");
    state
        .policies
        .insert((ns.into(), name.into()), std::sync::Arc::new(policy));
}

/// Namespaces `prod` (env=prod), `dev` (env=dev), `kube-system` (no labels of its own), and:
/// - prod/web (app=web, IPv4 + IPv6), container ports http 8080/TCP, dns 53/UDP, metrics 9090/TCP
/// - prod/db (app=db, tier=backend), prod/client (app=client)
/// - dev/web (app=web) with http 80/TCP, dev/client (app=client, tier=frontend)
/// - kube-system/dns (k8s-app=kube-dns) with dns 53/UDP and dns-tcp 53/TCP
/// - kube-system/agent: hostNetwork, on the node's address.
fn cluster() -> ClusterState {
    let mut s = ClusterState::default();
    s.namespaces.insert("prod".into(), labels(&[("env", "prod")]));
    s.namespaces.insert("dev".into(), labels(&[("env", "dev")]));
    add_pod(&mut s, "prod", "web", &[("app", "web")], &[PROD_WEB, PROD_WEB6]).ports = vec![
        port("http", 8080, Protocol::Tcp),
        port("dns", 53, Protocol::Udp),
        port("metrics", 9090, Protocol::Tcp),
    ];
    add_pod(
        &mut s,
        "prod",
        "db",
        &[("app", "db"), ("tier", "backend")],
        &[PROD_DB],
    );
    add_pod(&mut s, "prod", "client", &[("app", "client")], &[PROD_CLIENT]);
    add_pod(&mut s, "dev", "web", &[("app", "web")], &[DEV_WEB]).ports =
        vec![port("http", 80, Protocol::Tcp)];
    add_pod(
        &mut s,
        "dev",
        "client",
        &[("app", "client"), ("tier", "frontend")],
        &[DEV_CLIENT],
    );
    add_pod(
        &mut s,
        "kube-system",
        "dns",
        &[("k8s-app", "kube-dns")],
        &[KUBE_DNS],
    )
    .ports = vec![port("dns", 53, Protocol::Udp), port("dns-tcp", 53, Protocol::Tcp)];
    add_pod(&mut s, "kube-system", "agent", &[("app", "agent")], &[NODE]).host_network = true;
    s
}

fn tcp(s: &ClusterState, src: &str, dst: &str, port: u16) -> bool {
    allowed(s, ip(src), ip(dst), Protocol::Tcp, port, false)
}

fn udp(s: &ClusterState, src: &str, dst: &str, port: u16) -> bool {
    allowed(s, ip(src), ip(dst), Protocol::Udp, port, false)
}

fn tcp_in(s: &ClusterState, src: &str, dst: &str, port: u16) -> bool {
    ingress_allowed(s, ip(src), ip(dst), Protocol::Tcp, port, false)
}

fn tcp_out(s: &ClusterState, src: &str, dst: &str, port: u16) -> bool {
    egress_allowed(s, ip(src), ip(dst), Protocol::Tcp, port)
}

const EVERYONE: [&str; 8] = [
    PROD_WEB,
    PROD_DB,
    PROD_CLIENT,
    DEV_WEB,
    DEV_CLIENT,
    KUBE_DNS,
    NODE,
    OUTSIDE,
];

// Rule 1: isolation only by policies of the pod's own namespace that select it.

#[test]
fn default_allow_without_policies() {
    let s = cluster();
    for src in EVERYONE {
        for dst in EVERYONE {
            for proto in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
                assert!(
                    allowed(&s, ip(src), ip(dst), proto, 1234, false),
                    "{src} -> {dst}"
                );
            }
        }
    }
}

#[test]
fn deny_all_ingress_isolates_the_namespace_only() {
    let mut s = cluster();
    add_policy(&mut s, "prod", "deny-all", json!({ "podSelector": {} }));
    for src in EVERYONE {
        for dst in [PROD_WEB, PROD_WEB6, PROD_DB, PROD_CLIENT] {
            let same = src == dst || (src == PROD_WEB && dst == PROD_WEB6);
            assert_eq!(tcp_in(&s, src, dst, 80), same, "{src} -> {dst}");
        }
        // Other namespaces are untouched.
        assert!(tcp(&s, src, DEV_WEB, 80));
    }
    // Ingress-only: egress of prod pods is still open.
    assert!(tcp(&s, PROD_CLIENT, DEV_WEB, 80));
    assert!(tcp(&s, PROD_CLIENT, OUTSIDE, 443));
}

#[test]
fn policy_selects_only_matching_pods() {
    let mut s = cluster();
    add_policy(
        &mut s,
        "prod",
        "deny-db",
        json!({ "podSelector": { "matchLabels": { "app": "db" } } }),
    );
    assert!(!tcp(&s, PROD_CLIENT, PROD_DB, 5432));
    assert!(tcp(&s, PROD_CLIENT, PROD_WEB, 8080));
    // A dev pod labelled like the selector is not selected: the policy is in prod.
    add_policy(
        &mut s,
        "prod",
        "deny-web",
        json!({ "podSelector": { "matchLabels": { "app": "web" } } }),
    );
    assert!(!tcp(&s, DEV_CLIENT, PROD_WEB, 8080));
    assert!(tcp(&s, DEV_CLIENT, DEV_WEB, 80));
}

#[test]
fn policy_without_spec_denies_all_ingress_of_its_namespace() {
    let mut s = cluster();
    let policy: NetworkPolicy = serde_json::from_value(json!({ "metadata": { "name": "bare" } })).unwrap();
    s.policies
        .insert(("dev".into(), "bare".into()), std::sync::Arc::new(policy));
    assert!(!tcp(&s, PROD_CLIENT, DEV_WEB, 80));
    assert!(tcp(&s, DEV_WEB, PROD_WEB, 8080));
}

#[test]
fn policy_key_namespace_decides() {
    let mut s = cluster();
    // Key says dev; metadata says prod: the key wins (documented interpretation).
    let policy: NetworkPolicy =
        serde_json::from_value(json!({ "metadata": { "namespace": "prod" }, "spec": {} })).unwrap();
    s.policies
        .insert(("dev".into(), "odd".into()), std::sync::Arc::new(policy));
    assert!(!tcp(&s, PROD_CLIENT, DEV_WEB, 80));
    assert!(tcp(&s, DEV_CLIENT, PROD_WEB, 8080));
}

// Rule 2: policyTypes defaults.

#[test]
fn deny_all_egress_with_policy_types_egress() {
    let mut s = cluster();
    add_policy(
        &mut s,
        "prod",
        "deny-egress",
        json!({ "podSelector": {}, "policyTypes": ["Egress"] }),
    );
    assert!(!tcp(&s, PROD_CLIENT, DEV_WEB, 80));
    assert!(!tcp(&s, PROD_CLIENT, OUTSIDE, 443));
    assert!(!udp(&s, PROD_CLIENT, KUBE_DNS, 53));
    assert!(!tcp(&s, PROD_CLIENT, PROD_WEB, 8080), "same namespace too");
    // Ingress is not isolated.
    assert!(tcp(&s, DEV_CLIENT, PROD_WEB, 8080));
    assert!(tcp(&s, OUTSIDE, PROD_DB, 5432));
    // The egress half is what refuses.
    assert!(!tcp_out(&s, PROD_CLIENT, DEV_WEB, 80));
    assert!(tcp_in(&s, PROD_CLIENT, DEV_WEB, 80));
}

#[test]
fn egress_rules_without_policy_types_isolate_both_directions() {
    let mut s = cluster();
    add_policy(
        &mut s,
        "prod",
        "dns-only",
        json!({
            "podSelector": { "matchLabels": { "app": "client" } },
            "egress": [{ "ports": [{ "port": 53, "protocol": "UDP" }] }]
        }),
    );
    assert!(udp(&s, PROD_CLIENT, KUBE_DNS, 53));
    assert!(udp(&s, PROD_CLIENT, OUTSIDE, 53));
    assert!(!tcp(&s, PROD_CLIENT, DEV_WEB, 80));
    // policyTypes defaulted to [Ingress, Egress]: no ingress rules, so ingress is denied.
    assert!(!tcp(&s, PROD_WEB, PROD_CLIENT, 80));
    // Other pods of the namespace are not selected.
    assert!(tcp(&s, PROD_WEB, DEV_WEB, 80));
}

#[test]
fn empty_egress_list_without_policy_types_is_ingress_only() {
    let mut s = cluster();
    add_policy(&mut s, "prod", "p", json!({ "podSelector": {}, "egress": [] }));
    assert!(tcp(&s, PROD_CLIENT, DEV_WEB, 80));
    assert!(!tcp(&s, DEV_CLIENT, PROD_WEB, 8080));
}

#[test]
fn explicit_ingress_type_ignores_egress_rules() {
    let mut s = cluster();
    add_policy(
        &mut s,
        "prod",
        "p",
        json!({ "podSelector": {}, "policyTypes": ["Ingress"], "egress": [{ "ports": [{ "port": 53 }] }] }),
    );
    assert!(tcp(&s, PROD_CLIENT, DEV_WEB, 80), "egress not isolated");
    assert!(!tcp(&s, DEV_CLIENT, PROD_WEB, 8080));
}

#[test]
fn empty_policy_types_list_means_default() {
    let mut s = cluster();
    add_policy(
        &mut s,
        "prod",
        "p",
        json!({ "podSelector": {}, "policyTypes": [] }),
    );
    assert!(!tcp(&s, DEV_CLIENT, PROD_WEB, 8080));
    assert!(tcp(&s, PROD_CLIENT, DEV_WEB, 80));
}

// Rules 3 and 4: additive policies; a connection needs both halves.

#[test]
fn policies_are_additive() {
    let mut s = cluster();
    add_policy(&mut s, "prod", "deny", json!({ "podSelector": {} }));
    add_policy(
        &mut s,
        "prod",
        "from-dev",
        json!({ "podSelector": {}, "ingress": [{ "from": [{ "namespaceSelector": { "matchLabels": { "env": "dev" } } }] }] }),
    );
    assert!(tcp(&s, DEV_CLIENT, PROD_DB, 5432));
    assert!(!tcp(&s, PROD_CLIENT, PROD_DB, 5432));
}

#[test]
fn additive_policies_one_allows_what_the_others_except_excludes() {
    let mut s = cluster();
    add_policy(
        &mut s,
        "prod",
        "a-block",
        json!({ "podSelector": {}, "ingress": [{ "from": [{ "ipBlock": { "cidr": "10.0.0.0/16", "except": ["10.0.2.0/24"] } }] }] }),
    );
    assert!(tcp(&s, KUBE_DNS, PROD_DB, 5432));
    assert!(!tcp(&s, DEV_CLIENT, PROD_DB, 5432), "in the except");
    add_policy(
        &mut s,
        "prod",
        "b-dev-clients",
        json!({ "podSelector": {}, "ingress": [{ "from": [{ "ipBlock": { "cidr": "10.0.2.3/32" } }] }] }),
    );
    assert!(tcp(&s, DEV_CLIENT, PROD_DB, 5432), "another policy allows it");
    assert!(
        !tcp(&s, DEV_WEB, PROD_DB, 5432),
        "still excepted and not allowed by b"
    );
}

#[test]
fn connection_needs_egress_and_ingress() {
    let mut s = cluster();
    // prod/client may only talk to dev/web; dev/web only accepts from dev.
    add_policy(
        &mut s,
        "prod",
        "client-out",
        json!({
            "podSelector": { "matchLabels": { "app": "client" } },
            "policyTypes": ["Egress"],
            "egress": [{ "to": [{ "ipBlock": { "cidr": "10.0.2.1/32" } }] }]
        }),
    );
    add_policy(
        &mut s,
        "dev",
        "web-in",
        json!({
            "podSelector": { "matchLabels": { "app": "web" } },
            "ingress": [{ "from": [{ "podSelector": {} }] }]
        }),
    );
    assert!(tcp_out(&s, PROD_CLIENT, DEV_WEB, 80));
    assert!(!tcp_in(&s, PROD_CLIENT, DEV_WEB, 80));
    assert!(!tcp(&s, PROD_CLIENT, DEV_WEB, 80));
    assert!(tcp(&s, DEV_CLIENT, DEV_WEB, 80));
    assert!(
        !tcp(&s, PROD_CLIENT, DEV_CLIENT, 80),
        "egress refuses, ingress open"
    );
}

// Rule 5: rules.

#[test]
fn empty_rule_allows_everything() {
    let mut s = cluster();
    add_policy(
        &mut s,
        "prod",
        "deny",
        json!({ "podSelector": {}, "policyTypes": ["Ingress", "Egress"] }),
    );
    add_policy(
        &mut s,
        "prod",
        "all-in",
        json!({ "podSelector": {}, "ingress": [{}] }),
    );
    for src in EVERYONE {
        assert!(ingress_allowed(
            &s,
            ip(src),
            ip(PROD_DB),
            Protocol::Sctp,
            9,
            false
        ));
    }
    assert!(!tcp(&s, PROD_DB, DEV_WEB, 80), "egress still denied by `deny`");
}

#[test]
fn rule_without_from_allows_any_source_on_its_ports() {
    let mut s = cluster();
    add_policy(
        &mut s,
        "prod",
        "https",
        json!({ "podSelector": { "matchLabels": { "app": "web" } }, "ingress": [{ "ports": [{ "port": 443 }], "from": [] }] }),
    );
    for src in [PROD_CLIENT, DEV_CLIENT, NODE, OUTSIDE] {
        assert!(tcp(&s, src, PROD_WEB, 443), "{src}");
        assert!(!tcp(&s, src, PROD_WEB, 80), "{src}");
        assert!(!udp(&s, src, PROD_WEB, 443), "{src}");
    }
    assert!(tcp(&s, OUTSIDE6, PROD_WEB6, 443));
}

#[test]
fn rule_without_ports_allows_all_ports_and_protocols() {
    let mut s = cluster();
    add_policy(
        &mut s,
        "prod",
        "from-client",
        json!({ "podSelector": {}, "ingress": [{ "from": [{ "podSelector": { "matchLabels": { "app": "client" } } }], "ports": [] }] }),
    );
    for proto in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
        for p in [1, 80, 65535] {
            assert!(allowed(&s, ip(PROD_CLIENT), ip(PROD_DB), proto, p, false));
            assert!(!allowed(&s, ip(PROD_WEB), ip(PROD_DB), proto, p, false));
        }
    }
}

// Rule 6: peers.

#[test]
fn pod_selector_peer_is_limited_to_the_policy_namespace() {
    let mut s = cluster();
    add_policy(
        &mut s,
        "prod",
        "clients",
        json!({ "podSelector": {}, "ingress": [{ "from": [{ "podSelector": { "matchLabels": { "app": "client" } } }] }] }),
    );
    assert!(tcp(&s, PROD_CLIENT, PROD_DB, 5432));
    assert!(
        !tcp(&s, DEV_CLIENT, PROD_DB, 5432),
        "same labels, other namespace"
    );
    add_policy(
        &mut s,
        "prod",
        "all-local",
        json!({ "podSelector": {}, "ingress": [{ "from": [{ "podSelector": {} }] }] }),
    );
    assert!(tcp(&s, PROD_WEB, PROD_DB, 5432));
    assert!(!tcp(&s, DEV_WEB, PROD_DB, 5432));
    assert!(!tcp(&s, OUTSIDE, PROD_DB, 5432));
}

#[test]
fn empty_namespace_selector_selects_all_pods_of_all_namespaces() {
    let mut s = cluster();
    add_policy(
        &mut s,
        "prod",
        "cluster",
        json!({ "podSelector": {}, "ingress": [{ "from": [{ "namespaceSelector": {} }] }] }),
    );
    for src in [PROD_CLIENT, DEV_CLIENT, DEV_WEB, KUBE_DNS] {
        assert!(tcp(&s, src, PROD_DB, 5432), "{src}");
    }
    // Not pods: only ipBlock could match them.
    assert!(!tcp(&s, OUTSIDE, PROD_DB, 5432));
    assert!(!tcp(&s, NODE, PROD_DB, 5432), "hostNetwork pod / node address");
}

#[test]
fn namespace_selector_uses_namespace_labels_including_the_name_label() {
    let mut s = cluster();
    add_policy(
        &mut s,
        "prod",
        "from-kube-system",
        json!({
            "podSelector": {},
            "ingress": [{ "from": [{ "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "kube-system" } } }] }]
        }),
    );
    assert!(tcp(&s, KUBE_DNS, PROD_DB, 5432));
    assert!(!tcp(&s, DEV_CLIENT, PROD_DB, 5432));
    // Pod labels are not namespace labels.
    add_policy(
        &mut s,
        "prod",
        "pod-label-on-namespace",
        json!({ "podSelector": {}, "ingress": [{ "from": [{ "namespaceSelector": { "matchLabels": { "app": "client" } } }] }] }),
    );
    assert!(!tcp(&s, DEV_CLIENT, PROD_DB, 5432));
}

#[test]
fn pod_and_namespace_selector_in_one_peer_is_and() {
    let mut s = cluster();
    add_policy(
        &mut s,
        "prod",
        "and",
        json!({
            "podSelector": {},
            "ingress": [{ "from": [{
                "namespaceSelector": { "matchLabels": { "env": "dev" } },
                "podSelector": { "matchLabels": { "app": "client" } }
            }] }]
        }),
    );
    assert!(tcp(&s, DEV_CLIENT, PROD_DB, 5432));
    assert!(!tcp(&s, DEV_WEB, PROD_DB, 5432), "dev but not client");
    assert!(!tcp(&s, PROD_CLIENT, PROD_DB, 5432), "client but not dev");
}

#[test]
fn separate_peers_are_or() {
    let mut s = cluster();
    add_policy(
        &mut s,
        "prod",
        "or",
        json!({
            "podSelector": {},
            "ingress": [{ "from": [
                { "namespaceSelector": { "matchLabels": { "env": "dev" } } },
                { "podSelector": { "matchLabels": { "app": "client" } } }
            ] }]
        }),
    );
    assert!(tcp(&s, DEV_CLIENT, PROD_DB, 5432));
    assert!(tcp(&s, DEV_WEB, PROD_DB, 5432), "any dev pod");
    assert!(tcp(&s, PROD_CLIENT, PROD_DB, 5432), "any local client");
    assert!(!tcp(&s, PROD_WEB, PROD_DB, 5432));
    assert!(!tcp(&s, KUBE_DNS, PROD_DB, 5432));
}

#[test]
fn invalid_peers_match_nothing() {
    let mut s = cluster();
    add_policy(
        &mut s,
        "prod",
        "bad",
        json!({
            "podSelector": {},
            "ingress": [{ "from": [{}, { "ipBlock": { "cidr": "0.0.0.0/0" }, "podSelector": {} }] }]
        }),
    );
    for src in [PROD_CLIENT, DEV_CLIENT, OUTSIDE] {
        assert!(!tcp(&s, src, PROD_DB, 5432), "{src}");
    }
}

#[test]
fn ip_block_with_except_matches_pod_addresses() {
    let mut s = cluster();
    add_policy(
        &mut s,
        "prod",
        "block",
        json!({
            "podSelector": { "matchLabels": { "app": "db" } },
            "ingress": [{ "from": [{ "ipBlock": { "cidr": "10.0.0.0/8", "except": ["10.0.1.0/24", "10.0.3.10/32"] } }] }]
        }),
    );
    assert!(tcp(&s, DEV_CLIENT, PROD_DB, 5432), "pod address inside the cidr");
    assert!(
        tcp(&s, "10.200.0.1", PROD_DB, 5432),
        "non-pod address inside the cidr"
    );
    assert!(!tcp(&s, PROD_CLIENT, PROD_DB, 5432), "first except");
    assert!(!tcp(&s, KUBE_DNS, PROD_DB, 5432), "second except");
    assert!(!tcp(&s, OUTSIDE, PROD_DB, 5432), "outside the cidr");
    assert!(
        tcp(&s, "10.0.2.255", PROD_DB, 5432),
        "just past the except boundary"
    );
}

#[test]
fn ip_block_matches_host_network_pods_by_address() {
    let mut s = cluster();
    add_policy(
        &mut s,
        "prod",
        "node",
        json!({ "podSelector": {}, "ingress": [{ "from": [{ "ipBlock": { "cidr": "172.16.0.0/12" } }] }] }),
    );
    assert!(tcp(&s, NODE, PROD_DB, 5432));
}

#[test]
fn ip_block_never_crosses_address_families() {
    let mut s = cluster();
    add_policy(
        &mut s,
        "prod",
        "v4-all",
        json!({ "podSelector": {}, "ingress": [{ "from": [{ "ipBlock": { "cidr": "0.0.0.0/0" } }] }] }),
    );
    assert!(tcp(&s, OUTSIDE, PROD_WEB, 8080));
    assert!(
        !tcp(&s, OUTSIDE6, PROD_WEB6, 8080),
        "IPv4 /0 does not contain IPv6 addresses"
    );
    assert!(
        !tcp(&s, "::ffff:192.0.2.10", PROD_WEB6, 8080),
        "not even IPv4-mapped ones"
    );
    add_policy(
        &mut s,
        "prod",
        "v6",
        json!({ "podSelector": {}, "ingress": [{ "from": [{ "ipBlock": { "cidr": "2001:db8::/32", "except": ["10.0.0.0/8"] } }] }] }),
    );
    assert!(tcp(&s, OUTSIDE6, PROD_WEB6, 8080));
    assert!(!tcp(&s, "2001:db9::1", PROD_WEB6, 8080));
}

#[test]
fn ip_block_prefix_bounds() {
    let mut s = cluster();
    add_policy(
        &mut s,
        "prod",
        "p",
        json!({
            "podSelector": {},
            "ingress": [{ "from": [
                { "ipBlock": { "cidr": "192.0.2.10/32" } },
                { "ipBlock": { "cidr": "2001:db8::10/128" } },
                { "ipBlock": { "cidr": "198.51.100.77/24" } }
            ] }]
        }),
    );
    assert!(tcp(&s, OUTSIDE, PROD_WEB, 80));
    assert!(!tcp(&s, "192.0.2.11", PROD_WEB, 80));
    assert!(tcp(&s, OUTSIDE6, PROD_WEB6, 80));
    assert!(!tcp(&s, "2001:db8::11", PROD_WEB6, 80));
    assert!(
        tcp(&s, "198.51.100.1", PROD_WEB, 80),
        "host bits in the cidr are ignored"
    );
    assert!(!tcp(&s, "198.51.101.1", PROD_WEB, 80));
}

#[test]
fn malformed_ip_blocks_match_nothing() {
    for cidr in [
        "10.0.0.0",
        "10.0.0.0/33",
        "10.0.0.0/",
        "/8",
        "10.0.0/8",
        "10.0.0.0/+8",
        "fd00::/129",
        "nonsense",
        "",
    ] {
        let mut s = cluster();
        add_policy(
            &mut s,
            "prod",
            "p",
            json!({ "podSelector": {}, "ingress": [{ "from": [{ "ipBlock": { "cidr": cidr } }] }] }),
        );
        assert!(!tcp(&s, "10.0.0.0", PROD_DB, 5432), "{cidr:?}");
        assert!(!tcp(&s, DEV_CLIENT, PROD_DB, 5432), "{cidr:?}");
    }
    // A malformed except makes the whole block match nothing (never more than written).
    let mut s = cluster();
    add_policy(
        &mut s,
        "prod",
        "p",
        json!({ "podSelector": {}, "ingress": [{ "from": [{ "ipBlock": { "cidr": "10.0.0.0/8", "except": ["bogus"] } }] }] }),
    );
    assert!(!tcp(&s, DEV_CLIENT, PROD_DB, 5432));
}

// Rule 7: label selectors.

/// A policy protecting prod/db that admits pods matched by `selector` from any namespace.
fn admit_pods(selector: Value) -> ClusterState {
    let mut s = cluster();
    add_policy(
        &mut s,
        "prod",
        "sel",
        json!({
            "podSelector": { "matchLabels": { "app": "db" } },
            "ingress": [{ "from": [{ "namespaceSelector": {}, "podSelector": selector }] }]
        }),
    );
    s
}

fn expr(key: &str, operator: &str, values: &[&str]) -> Value {
    json!({ "matchExpressions": [{ "key": key, "operator": operator, "values": values }] })
}

#[test]
fn match_expressions_in() {
    let s = admit_pods(expr("app", "In", &["client", "web"]));
    assert!(tcp(&s, PROD_CLIENT, PROD_DB, 1));
    assert!(tcp(&s, DEV_WEB, PROD_DB, 1));
    assert!(!tcp(&s, KUBE_DNS, PROD_DB, 1), "key missing");
    let s = admit_pods(expr("app", "In", &[]));
    for src in [PROD_CLIENT, DEV_WEB, KUBE_DNS] {
        assert!(!tcp(&s, src, PROD_DB, 1), "In () matches nothing");
    }
}

#[test]
fn match_expressions_not_in_matches_missing_key() {
    let s = admit_pods(expr("tier", "NotIn", &["frontend"]));
    assert!(!tcp(&s, DEV_CLIENT, PROD_DB, 1), "tier=frontend");
    assert!(tcp(&s, PROD_CLIENT, PROD_DB, 1), "no tier label");
    assert!(tcp(&s, KUBE_DNS, PROD_DB, 1), "no tier label");
    let s = admit_pods(expr("tier", "NotIn", &[]));
    assert!(
        !tcp(&s, PROD_CLIENT, PROD_DB, 1),
        "NotIn () is invalid: matches nothing"
    );
}

#[test]
fn match_expressions_exists_and_does_not_exist() {
    let s = admit_pods(expr("tier", "Exists", &[]));
    assert!(tcp(&s, DEV_CLIENT, PROD_DB, 1));
    assert!(!tcp(&s, PROD_CLIENT, PROD_DB, 1));
    let s = admit_pods(json!({ "matchExpressions": [{ "key": "tier", "operator": "Exists" }] }));
    assert!(tcp(&s, DEV_CLIENT, PROD_DB, 1), "values omitted");
    let s = admit_pods(expr("tier", "DoesNotExist", &[]));
    assert!(!tcp(&s, DEV_CLIENT, PROD_DB, 1));
    assert!(tcp(&s, PROD_CLIENT, PROD_DB, 1));
    let s = admit_pods(expr("tier", "Exists", &["frontend"]));
    assert!(
        !tcp(&s, DEV_CLIENT, PROD_DB, 1),
        "Exists with values is invalid: matches nothing"
    );
}

#[test]
fn match_expressions_unknown_operator_matches_nothing() {
    for op in ["in", "Gt", "Equals", ""] {
        let s = admit_pods(expr("app", op, &["client"]));
        assert!(!tcp(&s, PROD_CLIENT, PROD_DB, 1), "{op:?}");
        assert!(!tcp(&s, DEV_WEB, PROD_DB, 1), "{op:?}");
    }
}

#[test]
fn match_labels_and_expressions_are_anded() {
    let s = admit_pods(json!({
        "matchLabels": { "app": "client" },
        "matchExpressions": [{ "key": "tier", "operator": "In", "values": ["frontend"] }]
    }));
    assert!(tcp(&s, DEV_CLIENT, PROD_DB, 1));
    assert!(!tcp(&s, PROD_CLIENT, PROD_DB, 1), "no tier");
    let s = admit_pods(json!({ "matchLabels": { "app": "client", "tier": "frontend" } }));
    assert!(tcp(&s, DEV_CLIENT, PROD_DB, 1));
    assert!(!tcp(&s, PROD_CLIENT, PROD_DB, 1));
    let s = admit_pods(json!({}));
    assert!(tcp(&s, KUBE_DNS, PROD_DB, 1), "empty selector matches everything");
}

#[test]
fn match_expressions_on_policy_pod_selector() {
    let mut s = cluster();
    add_policy(
        &mut s,
        "prod",
        "p",
        json!({ "podSelector": expr("app", "NotIn", &["web"]) }),
    );
    assert!(tcp(&s, PROD_CLIENT, PROD_WEB, 8080), "web not selected");
    assert!(!tcp(&s, PROD_WEB, PROD_DB, 5432));
    assert!(!tcp(&s, PROD_WEB, PROD_CLIENT, 80));
}

// Rules 8 and 9: ports and protocols.

#[test]
fn named_port_for_ingress_resolves_on_the_protected_pod() {
    let mut s = cluster();
    add_policy(
        &mut s,
        "prod",
        "http",
        json!({ "podSelector": {}, "ingress": [{ "ports": [{ "port": "http" }] }] }),
    );
    assert!(tcp(&s, DEV_CLIENT, PROD_WEB, 8080));
    assert!(tcp(&s, OUTSIDE6, PROD_WEB6, 8080));
    assert!(
        !tcp(&s, DEV_CLIENT, PROD_WEB, 80),
        "dev/web's http is 80, not prod/web's"
    );
    assert!(!tcp(&s, DEV_CLIENT, PROD_DB, 8080), "db has no port named http");
    // Name and protocol must both match: `dns` is UDP on prod/web.
    add_policy(
        &mut s,
        "prod",
        "dns",
        json!({ "podSelector": {}, "ingress": [{ "ports": [{ "port": "dns" }] }] }),
    );
    assert!(
        !udp(&s, DEV_CLIENT, PROD_WEB, 53),
        "entry protocol defaults to TCP"
    );
    assert!(!tcp(&s, DEV_CLIENT, PROD_WEB, 53), "container port is UDP");
    add_policy(
        &mut s,
        "prod",
        "dns-udp",
        json!({ "podSelector": {}, "ingress": [{ "ports": [{ "port": "dns", "protocol": "UDP" }] }] }),
    );
    assert!(udp(&s, DEV_CLIENT, PROD_WEB, 53));
    assert!(!udp(&s, DEV_CLIENT, PROD_WEB, 54));
}

#[test]
fn named_port_for_egress_resolves_on_the_remote_pod() {
    let mut s = cluster();
    add_policy(
        &mut s,
        "prod",
        "out-http",
        json!({ "podSelector": {}, "policyTypes": ["Egress"], "egress": [{ "ports": [{ "port": "http" }] }] }),
    );
    assert!(tcp(&s, PROD_CLIENT, DEV_WEB, 80), "dev/web's http");
    assert!(
        !tcp(&s, PROD_CLIENT, DEV_WEB, 8080),
        "8080 is the source namespace's web's http"
    );
    assert!(tcp(&s, PROD_CLIENT, PROD_WEB, 8080));
    assert!(!tcp(&s, PROD_CLIENT, OUTSIDE, 80), "not a pod: no named ports");
    assert!(
        !tcp(&s, PROD_CLIENT, NODE, 80),
        "hostNetwork pod: not a pod address"
    );
    assert!(!tcp(&s, PROD_CLIENT, PROD_DB, 80), "no such port on db");
}

#[test]
fn end_port_range_is_inclusive() {
    let mut s = cluster();
    add_policy(
        &mut s,
        "prod",
        "range",
        json!({ "podSelector": {}, "ingress": [{ "ports": [{ "port": 32000, "endPort": 32768 }] }] }),
    );
    assert!(!tcp(&s, OUTSIDE, PROD_DB, 31999));
    assert!(tcp(&s, OUTSIDE, PROD_DB, 32000));
    assert!(tcp(&s, OUTSIDE, PROD_DB, 32500));
    assert!(tcp(&s, OUTSIDE, PROD_DB, 32768));
    assert!(!tcp(&s, OUTSIDE, PROD_DB, 32769));
    assert!(!udp(&s, OUTSIDE, PROD_DB, 32000));
}

#[test]
fn degenerate_and_invalid_port_entries() {
    let cases = [
        (
            json!({ "port": 80, "endPort": 80 }),
            vec![(80, true), (79, false), (81, false)],
        ),
        (
            json!({ "port": 1, "endPort": 65535 }),
            vec![(1, true), (65535, true)],
        ),
        (
            json!({ "port": 90, "endPort": 80 }),
            vec![(80, false), (85, false), (90, false)],
        ),
        (json!({ "port": "http", "endPort": 9000 }), vec![(8080, false)]),
        (json!({ "endPort": 9000 }), vec![(8080, false), (9000, false)]),
        (json!({ "port": 0 }), vec![(0, false)]),
        (json!({ "port": 70000 }), vec![(4464, false), (65535, false)]),
        (json!({ "port": 65535, "endPort": 70000 }), vec![(65535, false)]),
        (json!({ "port": 8080, "protocol": "tcp" }), vec![(8080, false)]),
        (json!({ "port": 8080, "protocol": "ICMP" }), vec![(8080, false)]),
    ];
    for (entry, probes) in cases {
        let mut s = cluster();
        add_policy(
            &mut s,
            "prod",
            "p",
            json!({ "podSelector": {}, "ingress": [{ "ports": [entry.clone()] }] }),
        );
        for (p, want) in probes {
            assert_eq!(tcp(&s, OUTSIDE, PROD_WEB, p), want, "{entry} port {p}");
        }
    }
}

#[test]
fn protocol_without_port_matches_all_ports_of_that_protocol() {
    let mut s = cluster();
    add_policy(
        &mut s,
        "prod",
        "sctp",
        json!({ "podSelector": {}, "ingress": [{ "ports": [{ "protocol": "SCTP" }] }] }),
    );
    for p in [1, 3868, 65535] {
        assert!(allowed(&s, ip(OUTSIDE), ip(PROD_DB), Protocol::Sctp, p, false));
        assert!(!allowed(&s, ip(OUTSIDE), ip(PROD_DB), Protocol::Tcp, p, false));
        assert!(!allowed(&s, ip(OUTSIDE), ip(PROD_DB), Protocol::Udp, p, false));
    }
}

#[test]
fn udp_only_policy_blocks_tcp() {
    let mut s = cluster();
    add_policy(
        &mut s,
        "kube-system",
        "dns",
        json!({
            "podSelector": { "matchLabels": { "k8s-app": "kube-dns" } },
            "ingress": [{ "ports": [{ "port": 53, "protocol": "UDP" }] }]
        }),
    );
    assert!(udp(&s, PROD_CLIENT, KUBE_DNS, 53));
    assert!(!tcp(&s, PROD_CLIENT, KUBE_DNS, 53), "isolated for TCP too");
    assert!(!allowed(
        &s,
        ip(PROD_CLIENT),
        ip(KUBE_DNS),
        Protocol::Sctp,
        53,
        false
    ));
    // The default protocol is TCP.
    add_policy(
        &mut s,
        "kube-system",
        "dns-tcp",
        json!({ "podSelector": {}, "ingress": [{ "ports": [{ "port": 53 }] }] }),
    );
    assert!(tcp(&s, PROD_CLIENT, KUBE_DNS, 53));
}

// Rules 10 and 11: node traffic, hostNetwork pods, self.

#[test]
fn traffic_from_the_node_is_always_allowed_in() {
    let mut s = cluster();
    add_policy(
        &mut s,
        "prod",
        "deny",
        json!({ "podSelector": {}, "policyTypes": ["Ingress", "Egress"] }),
    );
    for proto in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
        assert!(allowed(&s, ip(NODE), ip(PROD_WEB), proto, 8080, true));
        assert!(ingress_allowed(&s, ip(NODE), ip(PROD_WEB6), proto, 1, true));
        assert!(!allowed(&s, ip(NODE), ip(PROD_WEB), proto, 8080, false));
    }
}

#[test]
fn host_network_pods_are_never_isolated() {
    let mut s = cluster();
    add_policy(
        &mut s,
        "kube-system",
        "deny",
        json!({ "podSelector": {}, "policyTypes": ["Ingress", "Egress"] }),
    );
    assert!(!tcp(&s, PROD_CLIENT, KUBE_DNS, 53), "ordinary pod is isolated");
    assert!(tcp(&s, PROD_CLIENT, NODE, 10250), "hostNetwork pod is not");
    assert!(tcp(&s, NODE, PROD_DB, 5432));
    assert!(tcp(&s, NODE, OUTSIDE, 443));
}

#[test]
fn pod_selectors_never_match_host_network_pods() {
    let mut s = cluster();
    add_policy(
        &mut s,
        "prod",
        "agents",
        json!({
            "podSelector": {},
            "ingress": [{ "from": [{ "namespaceSelector": {}, "podSelector": { "matchLabels": { "app": "agent" } } }] }]
        }),
    );
    assert!(!tcp(&s, NODE, PROD_DB, 5432));
}

#[test]
fn a_pod_can_always_reach_itself() {
    let mut s = cluster();
    add_policy(
        &mut s,
        "prod",
        "deny",
        json!({ "podSelector": {}, "policyTypes": ["Ingress", "Egress"] }),
    );
    assert!(tcp(&s, PROD_WEB, PROD_WEB, 8080));
    assert!(tcp(&s, PROD_WEB6, PROD_WEB6, 8080));
    assert!(udp(&s, PROD_WEB, PROD_WEB, 53));
    assert!(!tcp(&s, PROD_WEB, PROD_DB, 5432));
    assert!(!tcp(&s, PROD_DB, PROD_WEB, 8080));
}
