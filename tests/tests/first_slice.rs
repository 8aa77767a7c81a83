//! The first slice end to end: a node namespace running sluiced, pods wired by the real
//! plugin binary, real traffic through the eBPF programs, and clean failure paths.
//!
//! Privileged: `#[ignore]`d for plain `cargo test`; `cargo xtask test` runs them as root.

use std::net::IpAddr;

use sluice_tests::{
    cni::{self, Call},
    daemon::Sluiced,
    maps,
    ns::TestNs,
    require_root, traffic,
};

fn counters(d: &Sluiced, container_id: &str) -> sluice_api::EndpointCounters {
    d.endpoints()
        .into_iter()
        .find(|e| e.attachment.container_id == container_id)
        .map(|e| e.counters)
        .unwrap_or_else(|| panic!("no endpoint for {container_id}"))
}

#[test]
#[ignore = "privileged: run with `cargo xtask test` (root)"]
fn two_pods_get_distinct_addresses_and_talk_through_the_program() {
    require_root();
    let node = TestNs::new("node");
    let d = Sluiced::start(&node, &[]);
    let conf = d.conf("1.0.0");
    let a = cni::add_pod(&node, &conf, "pa");
    let b = cni::add_pod(&node, &conf, "pb");
    let (ia, ib) = (a.ip4(), b.ip4());
    assert_ne!(ia, ib);
    let cidr: ipnet_like::Cidr = "10.244.1.0/24".parse().unwrap();
    assert!(
        cidr.contains(ia) && cidr.contains(ib),
        "{ia} {ib} outside the pod CIDR"
    );
    // The result is well formed: two interfaces, the pod one with its sandbox.
    let r = &a.result;
    assert_eq!(r["cniVersion"], "1.0.0");
    assert_eq!(r["interfaces"][1]["name"], "eth0");
    assert_eq!(r["interfaces"][1]["sandbox"], a.ns.path_str());
    assert_eq!(r["ips"][0]["gateway"], "10.244.1.1");
    assert_eq!(r["ips"][0]["interface"], 1);

    let before_a = counters(&d, &a.container_id);
    let forwarded_before = forwarded(&node);
    assert!(traffic::ping_ok(&a.ns, ib), "a cannot ping b");
    assert!(traffic::ping_ok(&b.ns, ia), "b cannot ping a");
    assert!(traffic::tcp_ok(&a.ns, &b.ns, ib, 8080), "TCP a -> b");
    assert!(traffic::tcp_ok(&b.ns, &a.ns, ia, 8081), "TCP b -> a");
    // None of that crossed the node's IP stack: the programs carried it pod to pod.
    assert_eq!(
        forwarded(&node),
        forwarded_before,
        "pod-to-pod packets were forwarded by the node's stack"
    );
    // The pods reach their gateway (the node) too.
    assert!(traffic::ping_ok(&a.ns, "10.244.1.1".parse().unwrap()));

    let after_a = counters(&d, &a.container_id);
    let after_b = counters(&d, &b.container_id);
    assert!(
        after_a.tx_redirected >= before_a.tx_redirected + 6,
        "a's packets were not redirected by the program: {after_a:?}"
    );
    assert!(
        after_b.tx_redirected >= 6,
        "b's packets were not redirected: {after_b:?}"
    );
    assert!(
        after_a.neigh_replies >= 1,
        "the program answered no ARP for a: {after_a:?}"
    );
    assert!(after_b.rx_packets >= 6 && after_a.rx_packets >= 6);
    assert!(after_a.drops.is_empty(), "unexpected drops: {:?}", after_a.drops);

    // Negative control: detach a's programs (remove its link pins) and forget its neighbours.
    // Now the node's own stack answers a's ARP and routes its packets (slow path): the same
    // traffic no longer takes the fast path, the node forwards it instead.
    d.wait_tcx();
    let a_index = d
        .endpoints()
        .iter()
        .find(|e| e.attachment.container_id == a.container_id)
        .expect("a's endpoint")
        .host_ifindex;
    for dir in ["ingress", "egress"] {
        std::fs::remove_file(d.pin_dir().join("links").join(format!("{a_index}_{dir}"))).unwrap();
    }
    assert!(
        a.ns.cmd("ip")
            .args(["neigh", "flush", "all"])
            .status()
            .unwrap()
            .success()
    );
    let forwarded_detached = forwarded(&node);
    let got_through = traffic::ping(&a.ns, ib, 3);
    let detached = counters(&d, &a.container_id);
    assert_eq!(
        detached.tx_redirected, after_a.tx_redirected,
        "a's redirect counter moved with the program detached"
    );
    if got_through {
        assert!(
            forwarded(&node) > forwarded_detached,
            "without the program the node must have forwarded a's packets"
        );
    }
}

/// The node stack's forwarded-datagram counter (IPv4 `ForwDatagrams` of /proc/net/snmp).
fn forwarded(node: &TestNs) -> u64 {
    let out = node.cmd("cat").arg("/proc/net/snmp").output().expect("read snmp");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (lines.next().expect("Ip header"), lines.next().expect("Ip values"));
    let idx = names
        .split_whitespace()
        .position(|n| n == "ForwDatagrams")
        .expect("ForwDatagrams");
    values
        .split_whitespace()
        .nth(idx)
        .and_then(|v| v.parse().ok())
        .expect("ForwDatagrams value")
}

#[test]
#[ignore = "privileged: run with `cargo xtask test` (root)"]
fn del_removes_veth_lease_and_map_entries_and_is_idempotent() {
    require_root();
    let node = TestNs::new("node");
    let d = Sluiced::start(&node, &[]);
    let conf = d.conf("1.0.0");
    let a = cni::add_pod(&node, &conf, "pa");
    let host = a.host_ifname();
    assert!(node.has_link(&host));
    assert_eq!(d.leases().len(), 1);
    assert_eq!(maps::iface_entries(d.pin_dir()).len(), 1);
    assert_eq!(maps::endpoint_addresses(d.pin_dir()), vec![a.ip4()]);
    d.wait_tcx();
    assert_eq!(d.link_pins().len(), 2);

    cni::del_pod(&node, &conf, &a).ok();
    assert!(!node.has_link(&host), "host veth left behind");
    assert!(!a.ns.has_link("eth0"), "pod interface left behind");
    assert!(d.leases().is_empty(), "lease left behind");
    assert!(
        maps::iface_entries(d.pin_dir()).is_empty(),
        "SL_IFACES entry left behind"
    );
    assert!(
        maps::endpoint_addresses(d.pin_dir()).is_empty(),
        "SL_ENDPOINTS entry left behind"
    );
    assert!(
        d.link_pins().is_empty(),
        "link pins left behind: {:?}",
        d.link_pins()
    );

    // Again, and once more without a netns (the pod is gone): both succeed.
    cni::del_pod(&node, &conf, &a).ok();
    cni::exec(&node, &Call::new("DEL", &a.container_id, ""), &conf).ok();
    // And for a container that was never added.
    cni::exec(&node, &Call::new("DEL", "never-added", ""), &conf).ok();
}

/// Nothing of the attachment is left: no lease, no veth, no pins, no map entries.
fn assert_nothing_left(node: &TestNs, d: &Sluiced, container_id: &str) {
    assert!(
        !d.leases()
            .iter()
            .any(|l| l.attachment.container_id == container_id),
        "lease left behind"
    );
    let host = sluice_api::host_ifname(container_id, "eth0");
    assert!(!node.has_link(&host), "host veth {host} left behind");
    // Every link pin belongs to a registered endpoint.
    let live: Vec<String> = d.endpoints().iter().map(|e| e.host_ifindex.to_string()).collect();
    for pin in d.link_pins() {
        let index = pin.split('_').next().unwrap_or_default().to_owned();
        assert!(live.contains(&index), "pin {pin} belongs to no endpoint");
    }
}

#[test]
#[ignore = "privileged: run with `cargo xtask test` (root)"]
fn failed_adds_leave_nothing_and_say_why() {
    require_root();
    let node = TestNs::new("node");
    // A /30 holds one pod address (.2: .1 is the gateway, .3 broadcast).
    let d = Sluiced::start(&node, &["--pod-cidr", "10.250.0.0/30"]);
    let conf = d.conf("1.0.0");

    // A netns that does not exist: invalid environment (4), nothing allocated.
    let out = cni::exec(
        &node,
        &Call::new("ADD", "ghost", "/run/netns/slt-does-not-exist"),
        &conf,
    );
    assert_eq!(out.code(), 4, "{}", out.stdout);
    assert!(out.json()["msg"].as_str().unwrap().contains("CNI_NETNS"));
    assert_nothing_left(&node, &d, "ghost");

    // Exhausted pool: the second pod gets code 101 and nothing half-made.
    let first = cni::add_pod(&node, &conf, "p1");
    assert_eq!(first.ip4().to_string(), "10.250.0.2");
    let second_ns = TestNs::new("p2");
    let out = cni::exec(&node, &Call::new("ADD", "second", &second_ns.path_str()), &conf);
    assert_eq!(out.code(), 101, "{}", out.stdout);
    assert!(out.json()["msg"].as_str().unwrap().contains("no free address"));
    assert_nothing_left(&node, &d, "second");
    assert!(!second_ns.has_link("eth0"));
    assert_eq!(d.leases().len(), 1);
    assert_eq!(maps::iface_entries(d.pin_dir()).len(), 1);

    // The pod's interface name is taken: code 103, the existing interface untouched.
    let out = cni::exec(&node, &Call::new("ADD", "dup", &first.ns.path_str()), &conf);
    assert_eq!(out.code(), 103, "{}", out.stdout);
    assert!(first.ns.has_link("eth0"));
    assert_nothing_left(&node, &d, "dup");

    // The daemon is down: try again later (11), nothing created.
    let mut down = conf.clone();
    down["daemonSocket"] = serde_json::json!(format!("{}/nobody.sock", d.dir.path().display()));
    let out = cni::exec(&node, &Call::new("ADD", "nodaemon", &second_ns.path_str()), &down);
    assert_eq!(out.code(), 11, "{}", out.stdout);
    assert!(!second_ns.has_link("eth0"));
    assert_nothing_left(&node, &d, "nodaemon");
}

/// A tiny CIDR check for the test (no extra crate).
mod ipnet_like {
    use std::{net::IpAddr, str::FromStr};

    pub struct Cidr(IpAddr, u8);
    impl FromStr for Cidr {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            let (a, p) = s.split_once('/').ok_or(())?;
            Ok(Cidr(a.parse().map_err(|_| ())?, p.parse().map_err(|_| ())?))
        }
    }
    impl Cidr {
        pub fn contains(&self, ip: IpAddr) -> bool {
            match (self.0, ip) {
                (IpAddr::V4(n), IpAddr::V4(i)) => {
                    let mask = u32::MAX.checked_shl(32 - self.1 as u32).unwrap_or(0);
                    u32::from(n) & mask == u32::from(i) & mask
                }
                _ => false,
            }
        }
    }
}

#[allow(dead_code)]
fn _unused(_: IpAddr) {}
