//! Podman 4.3 (Debian 12, CNI backend) as the runtime: containers on a sluice network reach
//! each other over ICMP and TCP through the eBPF programs, `podman stop`/`start`/`rm` leave
//! nothing behind, and `--ip`/`--mac-address` arrive and are honoured.
//!
//! Podman silently runs its own masquerading network when a conflist fails validation, so each
//! test proves sluice wired the containers: the addresses are in sluiced's pod CIDR, podman
//! reports our network, sluiced lists the leases and endpoints, the programs' redirect counters
//! grow with the traffic, and the plugin calls podman made are recorded and checked.
//!
//! Everything runs in the test's node namespace (no uplink) with a private podman (see
//! `sluice_tests::podman`). Privileged: `#[ignore]`d for plain `cargo test`; `cargo xtask test`
//! runs them as root.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::Path,
    time::{Duration, Instant},
};

use sluice_tests::{
    daemon::Sluiced,
    ns::TestNs,
    podman::{ContainerInfo, Podman, netns_inode},
    require_root, unique,
};

const POD_CIDR: &str = "10.244.42.0/24";
const GATEWAY: &str = "10.244.42.1";

fn in_pod_cidr(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.octets()[..3] == [10, 244, 42])
}

/// A host-side veth of sluice's (`sl` + 12 hex digits), as opposed to `sluice0`.
fn is_host_veth(name: &str) -> bool {
    name.len() == 14 && name.starts_with("sl") && name[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

fn host_veths(node: &TestNs) -> Vec<String> {
    node.links().into_iter().filter(|l| is_host_veth(l)).collect()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn counters(d: &Sluiced, id: &str) -> sluice_api::EndpointCounters {
    d.endpoints()
        .into_iter()
        .find(|e| e.attachment.container_id == id)
        .map(|e| e.counters)
        .unwrap_or_else(|| panic!("sluiced has no endpoint for container {id}"))
}

/// The node namespace with sluiced in it and a private podman pointed at it.
fn setup() -> (TestNs, Sluiced, Podman) {
    require_root();
    let node = TestNs::new("node");
    let d = Sluiced::start(&node, &["--pod-cidr", POD_CIDR]);
    let p = Podman::new(&node, &d);
    // Podman drops a network whose conflist it cannot use: ours must be listed, with our
    // plugin as its driver.
    let nets = p.run(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(
        nets.lines().any(|n| n == p.network),
        "podman does not list our network {} (conflist rejected?): {nets}",
        p.network
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&p.run(&["network", "inspect", &p.network])).expect("network inspect JSON");
    assert_eq!(inspect[0]["driver"], "sluice", "network inspect: {inspect}");
    (node, d, p)
}

/// Everything that shows a running container was wired by sluice, and by sluice only.
fn assert_wired_by_sluice(node: &TestNs, d: &Sluiced, p: &Podman, name: &str) -> ContainerInfo {
    let c = p.info(name);
    assert!(c.running, "{name} is not running");
    assert_eq!(c.networks, vec![p.network.clone()], "{name}'s networks");
    let ip =
        c.ip.unwrap_or_else(|| panic!("podman reports no address for {name}"));
    assert!(
        in_pod_cidr(ip),
        "{name} got {ip}, outside sluiced's {POD_CIDR}: not our plugin"
    );
    assert_eq!(c.gateway, GATEWAY);
    // The container's own view: exactly that address on eth0, the MAC podman reports.
    let addr = p.exec(name, &["ip", "-o", "-4", "addr", "show", "dev", "eth0"]);
    assert!(
        addr.success && addr.stdout.contains(&format!("inet {ip}/32")),
        "{name}'s eth0: {addr:?}"
    );
    let mac = p.exec(name, &["cat", "/sys/class/net/eth0/address"]);
    assert_eq!(mac.stdout.trim(), c.mac, "{name}'s MAC");
    // sluiced's view.
    let lease = d
        .leases()
        .into_iter()
        .find(|l| l.attachment.container_id == c.id)
        .unwrap_or_else(|| panic!("sluiced has no lease for {name}"));
    assert_eq!(lease.address, ip);
    assert_eq!(lease.attachment.ifname, "eth0");
    let ep = d
        .endpoints()
        .into_iter()
        .find(|e| e.attachment.container_id == c.id)
        .unwrap_or_else(|| panic!("sluiced has no endpoint for {name}"));
    assert_eq!(ep.ips, vec![ip]);
    assert_eq!(ep.pod_mac, c.mac);
    assert_eq!(ep.host_ifname, sluice_api::host_ifname(&c.id, "eth0"));
    assert!(node.has_link(&ep.host_ifname), "host veth of {name} missing");
    // The ADD podman made for this netns: on our network, no prevResult, accepted.
    let add = p
        .calls_for(&c.id)
        .into_iter()
        .rev()
        .find(|k| k.command == "ADD")
        .unwrap_or_else(|| panic!("no ADD recorded for {name}:\n{}", p.calls_summary()));
    assert_eq!(add.netns, c.sandbox);
    assert_eq!(add.ifname, "eth0");
    assert_eq!(add.stdin["name"], p.network.as_str());
    assert_eq!(add.stdin["cniVersion"], "1.0.0");
    assert!(!add.has_prev_result(), "ADD came with a prevResult");
    assert_eq!(add.status, 0);
    c
}

/// Podman's processes run in the node namespace, the containers' in their own: nothing of this
/// runtime is in the machine's namespace.
fn assert_confined(node: &TestNs, p: &Podman, containers: &[&ContainerInfo]) {
    let node_ino = netns_inode(&node.path()).expect("node netns");
    let host_ino = netns_inode(Path::new("/proc/self/ns/net")).expect("own netns");
    let sandboxes: Vec<u64> = containers
        .iter()
        .map(|c| netns_inode(Path::new(&c.sandbox)).expect("container netns"))
        .collect();
    let procs = p.processes();
    assert!(
        procs.iter().any(|(_, comm, _)| comm == "conmon"),
        "no conmon in our cgroup: {procs:?}"
    );
    for (pid, comm, ino) in &procs {
        let Some(ino) = ino else { continue }; // exited meanwhile
        assert_ne!(
            *ino, host_ino,
            "{comm} ({pid}) runs in the machine's network namespace"
        );
        if comm == "conmon" {
            assert_eq!(*ino, node_ino, "conmon ({pid}) is not in the node namespace");
        } else {
            assert!(
                sandboxes.contains(ino) || *ino == node_ino,
                "{comm} ({pid}) is in an unknown network namespace"
            );
        }
    }
}

/// ICMP both ways and TCP (HTTP) both ways between two running containers, carried by the
/// programs: both endpoints' redirect counters grow.
fn assert_talk(d: &Sluiced, p: &Podman, a: (&str, &ContainerInfo), b: (&str, &ContainerInfo)) {
    let (na, ca) = a;
    let (nb, cb) = b;
    let (ia, ib) = (ca.ip.expect("ip"), cb.ip.expect("ip"));
    let (before_a, before_b) = (counters(d, &ca.id), counters(d, &cb.id));
    assert!(p.ping(na, ib), "{na} cannot ping {nb} ({ib})");
    assert!(p.ping(nb, ia), "{nb} cannot ping {na} ({ia})");
    assert_eq!(p.http_get(na, ib).as_deref(), Ok(nb), "TCP {na} -> {nb}");
    assert_eq!(p.http_get(nb, ia).as_deref(), Ok(na), "TCP {nb} -> {na}");
    let (after_a, after_b) = (counters(d, &ca.id), counters(d, &cb.id));
    // 3 echo requests or replies each way at least, plus the TCP segments.
    for (n, before, after) in [(na, before_a, &after_a), (nb, before_b, &after_b)] {
        assert!(
            after.tx_redirected >= before.tx_redirected + 10,
            "{n}'s packets were not redirected by the program: before {before:?} after {after:?}"
        );
        assert!(after.drops.is_empty(), "{n}: unexpected drops {:?}", after.drops);
    }
}

/// After a stop or rm: sluiced, the node and podman hold nothing more for this container.
fn assert_detached(node: &TestNs, d: &Sluiced, p: &Podman, was: &ContainerInfo) {
    wait_until("lease released", Duration::from_secs(10), || {
        !d.leases().iter().any(|l| l.attachment.container_id == was.id)
    });
    assert!(
        !d.endpoints().iter().any(|e| e.attachment.container_id == was.id),
        "endpoint left behind"
    );
    let host = sluice_api::host_ifname(&was.id, "eth0");
    assert!(!node.has_link(&host), "host veth {host} left behind");
    assert!(
        !Path::new(&was.sandbox).exists(),
        "podman left the container netns {}",
        was.sandbox
    );
    assert!(
        !p.cni_cache_files()
            .iter()
            .any(|f| f.to_string_lossy().contains(&was.id)),
        "libcni cache of {} left behind",
        was.id
    );
}

#[test]
#[ignore = "privileged: run with `cargo xtask test` (root)"]
fn podman_containers_talk_and_stop_start_rm_leave_nothing_behind() {
    let started = Instant::now();
    let (node, d, p) = setup();
    let (na, nb) = (unique("pa"), unique("pb"));
    p.run_container(&na, &[]);
    p.run_container(&nb, &[]);
    let a = assert_wired_by_sluice(&node, &d, &p, &na);
    let b = assert_wired_by_sluice(&node, &d, &p, &nb);
    assert_ne!(a.ip, b.ip);
    assert_eq!(d.leases().len(), 2);
    assert_eq!(host_veths(&node).len(), 2);
    assert_confined(&node, &p, &[&a, &b]);
    assert_talk(&d, &p, (&na, &a), (&nb, &b));
    // The endpoints moved to pinned tcx links: two per container.
    d.wait_tcx();
    assert_eq!(d.link_pins().len(), 4, "link pins: {:?}", d.link_pins());

    // stop: one DEL, with the ADD's result as prevResult; everything of a goes.
    p.run(&["stop", "--time", "5", &na]);
    let dels: Vec<_> = p
        .calls_for(&a.id)
        .into_iter()
        .filter(|c| c.command == "DEL")
        .collect();
    assert_eq!(dels.len(), 1, "DELs for stop:\n{}", p.calls_summary());
    let del = &dels[0];
    assert!(
        del.has_prev_result(),
        "stop's DEL has no prevResult: {:?}",
        del.stdin
    );
    assert_eq!(
        del.stdin["prevResult"]["ips"][0]["address"],
        format!("{}/32", a.ip.expect("ip")).as_str()
    );
    assert_eq!(del.netns, a.sandbox);
    assert_eq!(del.status, 0);
    assert_detached(&node, &d, &p, &a);
    assert!(!p.info(&na).running);
    // b is untouched.
    assert_wired_by_sluice(&node, &d, &p, &nb);
    assert_eq!(d.leases().len(), 1);
    assert_eq!(host_veths(&node).len(), 1);

    // start: a new ADD in a new netns, and it works again.
    p.run(&["start", &na]);
    let a2 = assert_wired_by_sluice(&node, &d, &p, &na);
    assert_eq!(a2.id, a.id);
    assert_ne!(a2.sandbox, a.sandbox, "start reused the old netns");
    assert_talk(&d, &p, (&na, &a2), (&nb, &b));
    assert_confined(&node, &p, &[&a2, &b]);

    // rm -f of running containers: DEL each, then nothing left anywhere.
    p.run(&["rm", "--force", "--time", "0", &na, &nb]);
    assert_detached(&node, &d, &p, &a2);
    assert_detached(&node, &d, &p, &b);
    assert!(d.leases().is_empty(), "leases left: {:?}", d.leases());
    assert!(d.endpoints().is_empty(), "endpoints left: {:?}", d.endpoints());
    assert!(
        host_veths(&node).is_empty(),
        "host veths left: {:?}",
        node.links()
    );
    wait_until("link pins removed", Duration::from_secs(10), || {
        d.link_pins().is_empty()
    });
    assert!(p.run(&["ps", "--all", "--quiet"]).trim().is_empty());
    assert!(
        p.cni_cache_files().is_empty(),
        "libcni cache: {:?}",
        p.cni_cache_files()
    );
    // conmon and its `container cleanup` exit command finish on their own.
    wait_until("podman's processes gone", Duration::from_secs(20), || {
        p.processes().is_empty()
    });
    let calls = p.calls_summary();
    let log = std::fs::read_to_string(&p.plugin_log).unwrap_or_default();
    // Removes the temp dirs and cgroups; fails when anything is left.
    p.close();
    eprintln!(
        "podman lifecycle: {:.1} s\nplugin calls podman made:\n{calls}\nplugin log:\n{log}",
        started.elapsed().as_secs_f64()
    );
}

#[test]
#[ignore = "privileged: run with `cargo xtask test` (root)"]
fn podman_run_ip_and_mac_address_arrive_as_cni_args_and_are_honoured() {
    let started = Instant::now();
    let (node, d, p) = setup();
    let want_ip = IpAddr::V4(Ipv4Addr::new(10, 244, 42, 200));
    let want_mac = "02:5e:10:00:00:c8";
    let (ns, np) = (unique("ps"), unique("pp"));
    p.run_container(&ns, &["--ip", &want_ip.to_string(), "--mac-address", want_mac]);
    p.run_container(&np, &[]);
    let s = assert_wired_by_sluice(&node, &d, &p, &ns);
    let peer = assert_wired_by_sluice(&node, &d, &p, &np);
    assert_eq!(s.ip, Some(want_ip), "--ip not honoured");
    assert_eq!(s.mac, want_mac, "--mac-address not honoured");
    // Podman 4.3 passes one --ip and --mac-address as CNI_ARGS, not runtimeConfig.
    let add = p
        .calls_for(&s.id)
        .into_iter()
        .find(|c| c.command == "ADD")
        .expect("ADD");
    assert_eq!(add.arg("IP"), Some("10.244.42.200"), "CNI_ARGS: {}", add.args);
    assert_eq!(add.arg("MAC"), Some(want_mac), "CNI_ARGS: {}", add.args);
    assert_talk(&d, &p, (&ns, &s), (&np, &peer));

    // stop + start: the same address and MAC again.
    p.run(&["stop", "--time", "5", &ns]);
    assert_detached(&node, &d, &p, &s);
    p.run(&["start", &ns]);
    let s2 = assert_wired_by_sluice(&node, &d, &p, &ns);
    assert_eq!((s2.ip, s2.mac.as_str()), (Some(want_ip), want_mac));
    assert_talk(&d, &p, (&ns, &s2), (&np, &peer));

    // An address outside the pod CIDR: podman run fails with the plugin's error (code 102),
    // podman undoes with a DEL, and nothing is left of the attempt.
    let nx = unique("px");
    let out = p.try_run_container(&nx, &["--ip", "10.99.0.7"]);
    assert!(!out.success, "a container outside the pod CIDR started: {out:?}");
    let failed = p
        .calls()
        .into_iter()
        .rfind(|c| c.command == "ADD" && c.arg("IP") == Some("10.99.0.7"))
        .unwrap_or_else(|| panic!("no ADD with IP=10.99.0.7:\n{}", p.calls_summary()));
    let err: serde_json::Value = serde_json::from_str(&failed.stdout).expect("error JSON");
    assert_eq!(err["code"], 102, "plugin error: {err}");
    assert!(
        out.stderr.contains(err["msg"].as_str().expect("msg")),
        "podman did not report the plugin's error: {}",
        out.stderr
    );
    let after: Vec<_> = p.calls_for(&failed.container_id);
    assert!(
        after.iter().any(|c| c.command == "DEL" && c.status == 0),
        "no DEL after the failed ADD:\n{}",
        p.calls_summary()
    );
    assert_eq!(d.leases().len(), 2, "leases: {:?}", d.leases());
    assert_eq!(host_veths(&node).len(), 2);
    p.run(&["rm", "--force", "--time", "0", &nx]);

    p.run(&["rm", "--force", "--time", "0", &ns, &np]);
    assert_detached(&node, &d, &p, &s2);
    assert_detached(&node, &d, &p, &peer);
    assert!(d.leases().is_empty() && d.endpoints().is_empty());
    assert!(
        host_veths(&node).is_empty(),
        "host veths left: {:?}",
        node.links()
    );
    wait_until("link pins removed", Duration::from_secs(10), || {
        d.link_pins().is_empty()
    });
    let calls = p.calls_summary();
    p.close();
    eprintln!(
        "podman --ip/--mac-address: {:.1} s\nplugin calls podman made:\n{calls}",
        started.elapsed().as_secs_f64()
    );
}
