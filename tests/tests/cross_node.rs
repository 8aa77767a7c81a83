//! Pods on different nodes, native routing and the VXLAN overlay, IPv4, IPv6 and dual-stack,
//! on simulated nodes (namespaces joined by a fabric namespace; nothing leaves the machine).
//!
//! Privileged: `cargo xtask test` runs them as root.

use std::net::IpAddr;

use sluice_tests::{
    multinode::{Cluster, Families, PodObject, pod_ips},
    require_root, traffic,
};

/// Everything that must work between two nodes, for each family the cluster has.
fn connectivity(c: &Cluster) {
    let a = c.add_pod(0, "default", "a");
    let b = c.add_pod(1, "default", "b");
    let (aips, bips) = (pod_ips(&a), pod_ips(&b));
    assert_eq!(
        aips.len(),
        if c.families == Families::Dual { 2 } else { 1 },
        "{:?}",
        a.result
    );
    for (ia, ib) in aips.iter().zip(&bips) {
        let (ia, ib): (IpAddr, IpAddr) = (*ia, *ib);
        assert!(
            c.nodes[0].pod_cidrs.iter().any(|cidr| contains(cidr, ia)),
            "{ia} not from node-1's CIDR"
        );
        assert!(traffic::ping_ok(&a.ns, ib), "{}: ping a -> b {ib}", c.routing);
        assert!(traffic::ping_ok(&b.ns, ia), "{}: ping b -> a {ia}", c.routing);
        assert!(
            traffic::tcp_ok(&a.ns, &b.ns, ib, 7001),
            "{}: TCP a -> b {ib}",
            c.routing
        );
        assert!(
            traffic::tcp_ok(&b.ns, &a.ns, ia, 7002),
            "{}: TCP b -> a {ia}",
            c.routing
        );
        assert!(
            traffic::udp_ok(&a.ns, &b.ns, ib, 7003, 200),
            "{}: UDP a -> b {ib}",
            c.routing
        );
        // Pod to its own node (gateway and the node's underlay address) and node to pod.
        let own_underlay = c.nodes[0]
            .underlay
            .iter()
            .copied()
            .find(|u| u.is_ipv4() == ia.is_ipv4());
        if let Some(u) = own_underlay {
            assert!(traffic::ping_ok(&a.ns, u), "pod -> own node {u}");
        }
        assert!(traffic::ping_ok(&c.nodes[0].ns, ia), "node -> own pod {ia}");
        // The other node reaches the pod too (its traffic crosses the same routes).
        assert!(traffic::ping_ok(&c.nodes[1].ns, ia), "remote node -> pod {ia}");
    }
}

fn contains(cidr: &str, ip: IpAddr) -> bool {
    let (net, len) = cidr.split_once('/').unwrap();
    let len: u32 = len.parse().unwrap();
    match (net.parse::<IpAddr>().unwrap(), ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            (u32::from(n) ^ u32::from(i)).checked_shr(32 - len).unwrap_or(0) == 0
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            (u128::from(n) ^ u128::from(i))
                .checked_shr(128 - len)
                .unwrap_or(0)
                == 0
        }
        _ => false,
    }
}

/// Every family in `routing` mode; then the program itself must have sent pods' packets to
/// the other node (native: its FIB fast path; vxlan: the tunnel key), not the node's stack,
/// and (native) received the other node's packets on the uplink straight into the pod.
fn every_family(routing: &'static str) {
    for fam in [Families::V4, Families::V6, Families::Dual] {
        let c = Cluster::new(routing, 2, fam);
        connectivity(&c);
        let s: sluice_api::Status = c.nodes[0].daemon().call(&sluice_api::Request::Status);
        assert_eq!(s.routing, routing);
        assert!(
            s.datapath_counters["to_remote"] > 0,
            "{routing}: the program did not forward to the other node: {:?}",
            s.datapath_counters
        );
        if routing == "native" {
            // And on the receiving side, from the uplink straight into the pod.
            assert!(
                s.datapath_counters["from_uplink_to_pod"] > 0,
                "native: from_uplink delivered nothing: {:?}",
                s.datapath_counters
            );
        }
    }
}

#[test]
#[ignore = "privileged: run with `cargo xtask test` (root)"]
fn native_routing_ipv4_ipv6_and_dual_stack() {
    require_root();
    every_family("native");
}

#[test]
#[ignore = "privileged: run with `cargo xtask test` (root)"]
fn vxlan_overlay_ipv4_ipv6_and_dual_stack() {
    require_root();
    every_family("vxlan");
}

#[test]
#[ignore = "privileged: run with `cargo xtask test` (root)"]
fn vxlan_mtu_is_right_and_oversize_is_refused_cleanly() {
    require_root();
    let c = Cluster::new("vxlan", 2, Families::V4);
    let a = c.add_pod(0, "default", "a");
    let b = c.add_pod(1, "default", "b");
    let ib = b.ip4();
    // Underlay 1500, VXLAN over IPv4 costs 50: pods get 1450, advertised in the result.
    assert_eq!(
        a.result["interfaces"][1].get("mtu"),
        None,
        "1.0.0 results carry no mtu"
    );
    // Asked over netlink: nsenter keeps the caller's /sys, which shows the host's eth0.
    let link =
        a.ns.cmd("ip")
            .args(["-o", "link", "show", "dev", "eth0"])
            .output()
            .unwrap();
    let link = String::from_utf8_lossy(&link.stdout).to_string();
    assert!(link.contains(" mtu 1450 "), "pod MTU: {link}");
    // A full-size TCP transfer (segments at the pod MTU) gets through.
    let (tx, rx) = std::sync::mpsc::channel();
    let srv = b.ns.spawn(move || -> std::io::Result<usize> {
        use std::io::Read;
        let l = std::net::TcpListener::bind((ib, 7100))?;
        tx.send(()).ok();
        let (mut s, _) = l.accept()?;
        let mut total = 0;
        let mut buf = vec![0u8; 65536];
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    });
    rx.recv().unwrap();
    a.ns.run(move || {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect((ib, 7100)).unwrap();
        s.write_all(&vec![7u8; 8 << 20]).unwrap();
    });
    assert_eq!(srv.join().unwrap().unwrap(), 8 << 20, "TCP transfer lost data");
    // A datagram that fills the pod MTU exactly (1450 - 20 - 8) crosses; ping likewise.
    assert!(
        traffic::udp_ok(&a.ns, &b.ns, ib, 7101, 1422),
        "UDP at the pod MTU"
    );
    let ok =
        a.ns.cmd("ping")
            .args(["-c", "2", "-W", "1", "-M", "do", "-s", "1422", &ib.to_string()])
            .output()
            .unwrap();
    assert!(
        ok.status.success(),
        "ping at the pod MTU: {}",
        String::from_utf8_lossy(&ok.stdout)
    );
    // One byte more with DF is refused by the sender's own stack, with an error: no black hole.
    let big =
        a.ns.cmd("ping")
            .args(["-c", "1", "-W", "1", "-M", "do", "-s", "1423", &ib.to_string()])
            .output()
            .unwrap();
    assert!(!big.status.success());
    let msg = String::from_utf8_lossy(&big.stderr).to_string() + &String::from_utf8_lossy(&big.stdout);
    assert!(
        msg.contains("too long") || msg.contains("mtu"),
        "not refused cleanly: {msg}"
    );
    let refused = a.ns.run(move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        // IP_PMTUDISC_DO: never fragment.
        let v: libc::c_int = 2;
        use std::os::fd::AsRawFd;
        // SAFETY: valid socket and option buffer.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                (&v as *const libc::c_int).cast(),
                4,
            )
        };
        s.send_to(&[0u8; 1500], (ib, 7102))
            .err()
            .and_then(|e| e.raw_os_error())
    });
    assert_eq!(
        refused,
        Some(libc::EMSGSIZE),
        "an oversize datagram must fail with EMSGSIZE"
    );
}

#[test]
#[ignore = "privileged: run with `cargo xtask test` (root)"]
fn nodes_join_and_leave() {
    require_root();
    for routing in ["native", "vxlan"] {
        let mut c = Cluster::new(routing, 2, Families::V4);
        let a = c.add_pod(0, "default", "a");
        // A third node joins: its pods are reachable from the others'.
        let idx = c.add_node();
        let n = c.add_pod(idx, "default", "n");
        let t = std::time::Instant::now();
        while !traffic::ping(&a.ns, n.ip4(), 1) {
            assert!(
                t.elapsed().as_secs() < 10,
                "{routing}: new node's pod unreachable"
            );
        }
        assert!(traffic::ping_ok(&n.ns, a.ip4()));
        // It leaves: the others drop their routes to it.
        let gone = c.remove_node(idx);
        let ip = n.ip4();
        let t = std::time::Instant::now();
        loop {
            let routes = c.nodes[0]
                .ns
                .cmd("ip")
                .args(["route", "show", "10.244.3.0/24"])
                .output()
                .unwrap();
            if routes.stdout.is_empty() {
                break;
            }
            assert!(
                t.elapsed().as_secs() < 10,
                "{routing}: route to the departed node stays"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(
            !traffic::ping(&a.ns, ip, 1),
            "{routing}: departed node still reachable"
        );
        drop(n);
        drop(gone);
    }
}

#[test]
#[ignore = "privileged: run with `cargo xtask test` (root)"]
fn network_policy_across_nodes() {
    require_root();
    for routing in ["vxlan", "native"] {
        let c = Cluster::new(routing, 2, Families::Dual);
        let server = c.add_pod(0, "prod", "server");
        let good = c.add_pod(1, "prod", "good");
        let bad = c.add_pod(1, "prod", "bad");
        let rev = c.revisions();
        c.write_pods(
            "10-pods.yaml",
            &[
                PodObject {
                    ns: "prod",
                    name: "server",
                    labels: &[("app", "server")],
                    pod: &server,
                },
                PodObject {
                    ns: "prod",
                    name: "good",
                    labels: &[("app", "client")],
                    pod: &good,
                },
                PodObject {
                    ns: "prod",
                    name: "bad",
                    labels: &[("app", "other")],
                    pod: &bad,
                },
            ],
        );
        c.write_file(
            "20-policy.yaml",
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: server, namespace: prod}\nspec:\n  podSelector: {matchLabels: {app: server}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {app: client}}\n    ports:\n    - {port: 8080}\n",
        );
        c.wait_applied(&rev);
        for (s, b) in pod_ips(&server).into_iter().zip(pod_ips(&bad)) {
            assert!(
                traffic::tcp_ok(&good.ns, &server.ns, s, 8080),
                "{routing}: allowed peer on the other node refused ({s})"
            );
            assert!(
                !traffic::tcp_ok(&bad.ns, &server.ns, s, 8080),
                "{routing}: denied peer on the other node let in ({s})"
            );
            assert!(
                !traffic::tcp_ok(&good.ns, &server.ns, s, 8081),
                "{routing}: wrong port let in ({s})"
            );
            // The isolated server's own outbound connection to the denied pod works: its
            // replies cross back into the server through conntrack, not through a rule.
            assert!(
                traffic::tcp_ok(&server.ns, &bad.ns, b, 9000),
                "{routing}: replies from the other node dropped ({b})"
            );
        }
    }
}

#[test]
#[ignore = "privileged: run with `cargo xtask test` (root)"]
fn native_restart_keeps_the_uplink_program_and_the_traffic() {
    require_root();
    let mut c = Cluster::new("native", 2, Families::V4);
    let a = c.add_pod(0, "default", "a");
    let b = c.add_pod(1, "default", "b");
    let ib = b.ip4();
    assert!(traffic::tcp_ok(&a.ns, &b.ns, ib, 7201));
    let delivered = |c: &Cluster| {
        let s: sluice_api::Status = c.nodes[1].daemon().call(&sluice_api::Request::Status);
        s.datapath_counters["from_uplink_to_pod"]
    };
    let before = delivered(&c);
    assert!(before > 0, "from_uplink delivered nothing before the restart");
    // While the receiving node's daemon is down, the pinned uplink program keeps delivering.
    let d = c.nodes[1].daemon.as_mut().unwrap();
    d.stop();
    assert!(
        traffic::tcp_ok(&a.ns, &b.ns, ib, 7202),
        "cross-node traffic stopped with the daemon"
    );
    d.launch();
    let pins: Vec<String> = std::fs::read_dir(d.pin_dir().join("links"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        pins.iter().filter(|p| p.starts_with("uplink_")).count(),
        1,
        "one uplink link after the restart: {pins:?}"
    );
    assert!(traffic::tcp_ok(&a.ns, &b.ns, ib, 7203));
    assert!(
        delivered(&c) > before,
        "from_uplink stopped delivering across the restart"
    );
}
