//! NetworkPolicy through the real datapath, in the upstream e2e model: x/y/z × a/b/c, TCP and
//! UDP 80/81, a full 9×9 matrix per case compared with the reference evaluator (plus explicit
//! spot checks, so a shared misreading of the API would still show).
//!
//! Privileged: `cargo xtask test` runs them as root.

use std::time::{Duration, Instant};

use sluice_policy::model::Protocol::{Tcp, Udp};
use sluice_tests::{netpol::Cluster, require_root, traffic};

fn policy(name: &str, ns: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{spec}"
    )
}

/// Apply, check the whole matrix against the reference, remove, and return the matrix.
fn case(c: &Cluster, name: &str, yaml: &str) -> sluice_tests::netpol::Matrix {
    let file = format!("50-{name}.yaml");
    c.apply(&file, yaml);
    let m = c.check(name);
    c.delete(&file);
    m
}

#[test]
#[ignore = "privileged: run with `cargo xtask test` (root)"]
fn netpol_isolation_and_selectors() {
    require_root();
    let c = Cluster::new();
    let m = c.check("no policies: everything allowed");
    assert_eq!(m.count_allowed(), 9 * 9 * 4);

    let m = case(
        &c,
        "deny-all-ingress-x",
        &policy("deny", "x", "  podSelector: {}\n  policyTypes: [Ingress]\n"),
    );
    assert!(!m.get("y/a", "x/a", Tcp, 80) && !m.get("x/b", "x/a", Udp, 81));
    assert!(m.get("x/a", "x/a", Tcp, 80), "a pod reaches itself");
    assert!(m.get("x/a", "y/b", Tcp, 80), "egress of x is not isolated");

    let m = case(
        &c,
        "deny-all-egress-x",
        &policy("deny", "x", "  podSelector: {}\n  policyTypes: [Egress]\n"),
    );
    assert!(!m.get("x/a", "y/a", Tcp, 80) && m.get("y/a", "x/a", Tcp, 80));

    // A podSelector-only peer means pods of the policy's own namespace.
    let m = case(
        &c,
        "from-pod-b-same-ns",
        &policy(
            "p",
            "x",
            "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {pod: b}}\n",
        ),
    );
    assert!(m.get("x/b", "x/a", Tcp, 80) && !m.get("y/b", "x/a", Tcp, 80) && !m.get("x/c", "x/a", Tcp, 80));

    let m = case(
        &c,
        "from-namespace-y",
        &policy(
            "p",
            "x",
            "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n",
        ),
    );
    assert!(m.get("y/c", "x/a", Udp, 80) && !m.get("z/c", "x/a", Udp, 80) && !m.get("x/b", "x/a", Tcp, 80));

    // One peer with both selectors: AND.
    let m = case(
        &c,
        "and-peer",
        &policy(
            "p",
            "x",
            "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n      podSelector: {matchLabels: {pod: c}}\n",
        ),
    );
    assert!(m.get("y/c", "x/a", Tcp, 80) && !m.get("y/b", "x/a", Tcp, 80) && !m.get("x/c", "x/a", Tcp, 80));

    // Two peers: OR.
    let m = case(
        &c,
        "or-peers",
        &policy(
            "p",
            "x",
            "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n    - podSelector: {matchLabels: {pod: c}}\n",
        ),
    );
    assert!(m.get("y/b", "x/a", Tcp, 80) && m.get("x/c", "x/a", Tcp, 80) && !m.get("z/c", "x/a", Tcp, 80));

    case(
        &c,
        "all-namespaces-pod-b",
        &policy(
            "p",
            "x",
            "  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector: {}\n      podSelector: {matchLabels: {pod: b}}\n",
        ),
    );
    case(
        &c,
        "expr-notin",
        &policy(
            "p",
            "y",
            "  podSelector: {matchExpressions: [{key: pod, operator: NotIn, values: [a, b]}]}\n  ingress:\n  - from:\n    - namespaceSelector: {matchExpressions: [{key: ns, operator: In, values: [x, z]}]}\n",
        ),
    );
    case(
        &c,
        "expr-exists",
        &policy(
            "p",
            "z",
            "  podSelector: {matchExpressions: [{key: pod, operator: Exists}]}\n  ingress:\n  - from:\n    - podSelector: {matchExpressions: [{key: nothere, operator: DoesNotExist}]}\n",
        ),
    );
    case(
        &c,
        "rule-allow-all",
        &policy("p", "x", "  podSelector: {}\n  ingress:\n  - {}\n"),
    );
}

#[test]
#[ignore = "privileged: run with `cargo xtask test` (root)"]
fn netpol_ip_blocks_ports_and_protocols() {
    require_root();
    let c = Cluster::new();
    let yb = c.pod("y/b").pod.ip4();
    // ipBlock matches pod addresses too; except carves one pod out.
    let yaml = policy(
        "p",
        "x",
        &format!(
            "  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from:\n    - ipBlock: {{cidr: 10.244.1.0/24, except: [{yb}/32]}}\n"
        ),
    );
    let m = case(&c, "ipblock-except", &yaml);
    assert!(m.get("y/a", "x/a", Tcp, 80) && !m.get("y/b", "x/a", Tcp, 80));

    let m = case(
        &c,
        "port-80-tcp-only",
        &policy(
            "p",
            "x",
            "  podSelector: {}\n  ingress:\n  - ports:\n    - port: 80\n",
        ),
    );
    assert!(m.get("y/a", "x/a", Tcp, 80) && !m.get("y/a", "x/a", Tcp, 81) && !m.get("y/a", "x/a", Udp, 80));

    let m = case(
        &c,
        "named-port-ingress",
        &policy(
            "p",
            "x",
            "  podSelector: {}\n  ingress:\n  - ports:\n    - port: serve-81-udp\n      protocol: UDP\n",
        ),
    );
    assert!(m.get("y/a", "x/b", Udp, 81) && !m.get("y/a", "x/b", Udp, 80) && !m.get("y/a", "x/b", Tcp, 81));

    // Named ports of egress rules are resolved on the destination pod.
    let m = case(
        &c,
        "named-port-egress",
        &policy(
            "p",
            "x",
            "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - ports:\n    - port: serve-80-tcp\n",
        ),
    );
    assert!(m.get("x/a", "z/c", Tcp, 80) && !m.get("x/a", "z/c", Tcp, 81) && !m.get("x/a", "z/c", Udp, 80));

    let m = case(
        &c,
        "end-port-range",
        &policy(
            "p",
            "y",
            "  podSelector: {}\n  ingress:\n  - ports:\n    - {protocol: TCP, port: 81, endPort: 90}\n",
        ),
    );
    assert!(m.get("x/a", "y/a", Tcp, 81) && !m.get("x/a", "y/a", Tcp, 80));

    // A policy that allows only UDP still isolates for TCP.
    let m = case(
        &c,
        "udp-only",
        &policy(
            "p",
            "z",
            "  podSelector: {}\n  ingress:\n  - ports:\n    - protocol: UDP\n",
        ),
    );
    assert!(m.get("x/a", "z/a", Udp, 80) && !m.get("x/a", "z/a", Tcp, 80));

    case(
        &c,
        "sctp-only",
        &policy(
            "p",
            "z",
            "  podSelector: {}\n  ingress:\n  - ports:\n    - protocol: SCTP\n      port: 80\n",
        ),
    );
    case(
        &c,
        "ipblock-world-only",
        &policy(
            "p",
            "x",
            "  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 192.168.0.0/16}\n",
        ),
    );
}

#[test]
#[ignore = "privileged: run with `cargo xtask test` (root)"]
fn netpol_additivity_and_egress() {
    require_root();
    let c = Cluster::new();
    // Two policies on the same pods: either allowing is enough (no deny rules).
    c.apply(
        "50-one.yaml",
        &policy(
            "one",
            "x",
            "  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n",
        ),
    );
    c.apply("50-two.yaml", &policy("two", "x", "  podSelector: {matchLabels: {pod: b}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: z}}\n"));
    let m = c.check("additive");
    assert!(m.get("z/a", "x/b", Tcp, 80) && !m.get("z/a", "x/a", Tcp, 80) && m.get("y/a", "x/a", Tcp, 80));
    c.delete("50-one.yaml");
    c.delete("50-two.yaml");

    // Egress rules without policyTypes make the policy an egress policy too.
    let m = case(
        &c,
        "egress-implied",
        &policy(
            "p",
            "y",
            "  podSelector: {matchLabels: {pod: a}}\n  egress:\n  - to:\n    - namespaceSelector: {matchLabels: {ns: z}}\n",
        ),
    );
    assert!(m.get("y/a", "z/b", Tcp, 80) && !m.get("y/a", "x/b", Tcp, 80) && !m.get("x/a", "y/a", Tcp, 80));

    // Both directions must allow: x/a may only send to z, z/b may only receive from y.
    c.apply("50-eg.yaml", &policy("eg", "x", "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - namespaceSelector: {matchLabels: {ns: z}}\n"));
    c.apply("50-in.yaml", &policy("in", "z", "  podSelector: {matchLabels: {pod: b}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n"));
    let m = c.check("egress-and-ingress");
    assert!(!m.get("x/a", "z/b", Tcp, 80), "z/b's ingress refuses x");
    assert!(m.get("x/a", "z/a", Tcp, 80));
    c.delete("50-eg.yaml");
    c.delete("50-in.yaml");

    // Deny-all egress with an ipBlock that holds every pod: allowed again by the block.
    case(
        &c,
        "egress-ipblock",
        &policy(
            "p",
            "z",
            "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - ipBlock: {cidr: 10.244.0.0/16, except: [10.244.1.0/28]}\n",
        ),
    );
}

#[test]
#[ignore = "privileged: run with `cargo xtask test` (root)"]
fn netpol_is_stateful_and_follows_changes() {
    require_root();
    let mut c = Cluster::new();
    // x/a: nothing may come in, but it may go out: its connections' replies come back.
    c.apply(
        "50-deny.yaml",
        &policy(
            "deny",
            "x",
            "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Ingress]\n",
        ),
    );
    let m = c.check("stateful replies");
    assert!(
        m.get("x/a", "y/a", Tcp, 80) && m.get("x/a", "y/a", Udp, 81),
        "replies to x/a's own connections"
    );
    assert!(!m.get("y/a", "x/a", Tcp, 80));

    // An established connection survives an unrelated policy change, and is cut when its own
    // direction is denied (policy generation re-check).
    let xa = c.pod("x/a").pod.ns.path();
    let yb_ip = c.pod("y/b").pod.ip4();
    let long_lived = std::thread::spawn(move || {
        let ns = sluice_cni::netns::NetNs::open(&xa).unwrap();
        ns.enter().unwrap();
        let mut s =
            std::net::TcpStream::connect_timeout(&(yb_ip, 80).into(), Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        use std::io::{Read, Write};
        s.write_all(b"probe").unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(s.read(&mut buf).unwrap(), 5);
    });
    long_lived.join().unwrap();

    // Policy updated in place: now x/a admits y.
    let t = c.apply("50-deny.yaml", &policy("deny", "x", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n"));
    eprintln!(
        "update applied {:.1} ms after the file changed",
        t.as_secs_f64() * 1e3
    );
    let m = c.check("policy updated");
    assert!(m.get("y/a", "x/a", Tcp, 80) && !m.get("z/a", "x/a", Tcp, 80));

    // A namespace label change moves y out of the allowed set.
    c.ns_labels
        .get_mut("y")
        .unwrap()
        .insert("ns".into(), "y-renamed".into());
    c.update_model();
    let m = c.check("namespace label changed");
    assert!(!m.get("y/a", "x/a", Tcp, 80));
    c.ns_labels.get_mut("y").unwrap().insert("ns".into(), "y".into());
    c.update_model();

    // A pod label change takes x/a out of the policy's selection.
    c.pod_labels
        .get_mut("x/a")
        .unwrap()
        .insert("pod".into(), "a2".into());
    c.update_model();
    let m = c.check("pod label changed");
    assert!(m.get("z/a", "x/a", Tcp, 80));
    c.pod_labels
        .get_mut("x/a")
        .unwrap()
        .insert("pod".into(), "a".into());
    c.update_model();

    // Deleting the policy restores default allow.
    c.delete("50-deny.yaml");
    let m = c.check("policy deleted");
    assert_eq!(m.count_allowed(), 9 * 9 * 4);

    // A broken manifest keeps the previous contents in force.
    c.apply(
        "50-deny.yaml",
        &policy("deny", "x", "  podSelector: {}\n  policyTypes: [Ingress]\n"),
    );
    c.write_file(
        "50-deny.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: x\nspec: [",
    );
    std::thread::sleep(Duration::from_millis(300));
    let denied = c.pod("y/a").pod.ns.run({
        let ip = c.pod("x/b").pod.ip4();
        move || !sluice_tests::netpol::probe_one(Tcp, ip, 80)
    });
    assert!(denied, "a half-written manifest dropped the deny policy");
    c.delete("50-deny.yaml");
}

#[test]
#[ignore = "privileged: run with `cargo xtask test` (root)"]
fn netpol_node_traffic_neighbours_and_new_pods() {
    require_root();
    let c = Cluster::new();
    c.apply(
        "50-deny.yaml",
        &policy(
            "deny",
            "x",
            "  podSelector: {}\n  policyTypes: [Ingress, Egress]\n",
        ),
    );
    let xa = c.pod("x/a");
    // The node (kubelet probes) still reaches a pod under deny-all, and the replies return.
    let ip = xa.pod.ip4();
    let ok = c.node.run(move || sluice_tests::netpol::probe_one(Tcp, ip, 80));
    assert!(ok, "node -> pod under deny-all");
    // ARP keeps working under deny-all: flush the pod's neighbours, the node's probe still works.
    assert!(
        xa.pod
            .ns
            .cmd("ip")
            .args(["neigh", "flush", "all"])
            .status()
            .unwrap()
            .success()
    );
    let ok = c.node.run(move || sluice_tests::netpol::probe_one(Tcp, ip, 81));
    assert!(ok, "node -> pod after the pod forgot its neighbours");
    assert!(
        !traffic::ping(&xa.pod.ns, c.pod("y/a").pod.ip4(), 1),
        "deny-all egress lets ICMP out"
    );

    // A new pod selected by the existing policy never gets a packet through: probe right
    // after its ADD returns.
    let conf = c.daemon.conf("1.0.0");
    let started = Instant::now();
    let d = sluice_tests::cni::add_pod_with(&c.node, &conf, "xd", |call| {
        call.with_args("IgnoreUnknown=1;K8S_POD_NAMESPACE=x;K8S_POD_NAME=d")
    });
    let d_ip = d.ip4();
    let srv = traffic::tcp_echo_server(&d.ns, d_ip, 80);
    let leaked = c
        .pod("y/a")
        .pod
        .ns
        .run(move || sluice_tests::netpol::probe_one(Tcp, d_ip, 80));
    assert!(
        !leaked,
        "a new pod under deny-all accepted a connection after its ADD ({:?})",
        started.elapsed()
    );
    let _ = c.node.run(move || sluice_tests::netpol::probe_one(Tcp, d_ip, 80));
    let _ = srv.join();

    // The datapath counted the drops by reason.
    let eps = c.daemon.endpoints();
    let x_a = eps
        .iter()
        .find(|e| {
            e.pod
                .as_ref()
                .is_some_and(|p| p.namespace == "x" && p.name == "a")
        })
        .unwrap();
    assert!(x_a.ingress_isolated && x_a.egress_isolated);
    assert!(
        x_a.counters.drops.get("policy_egress").copied().unwrap_or(0) > 0,
        "{:?}",
        x_a.counters.drops
    );
}
