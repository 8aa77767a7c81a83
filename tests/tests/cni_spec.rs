//! The CNI specification through the real binary and daemon: every verb, result versions,
//! chaining, static requests, every DEL variant runtimes send, CHECK, STATUS, GC, and the
//! teardown queue that keeps DEL from failing or leaking while sluiced is down.
//!
//! Privileged: `cargo xtask test` runs them as root.

use serde_json::{Value, json};
use sluice_tests::{
    cni::{self, Call},
    daemon::Sluiced,
    maps,
    ns::TestNs,
    require_root, traffic,
};

fn conf_with(d: &Sluiced, version: &str, extra: Value) -> Value {
    let mut c = d.conf(version);
    if let (Value::Object(c), Value::Object(e)) = (&mut c, extra) {
        c.extend(e);
    }
    c
}

#[test]
#[ignore = "privileged: run with `cargo xtask test` (root)"]
fn results_follow_the_requested_version() {
    require_root();
    let node = TestNs::new("node");
    let d = Sluiced::start(
        &node,
        &["--pod-cidr", "10.244.1.0/24", "--pod-cidr", "fd00:10:244:1::/64"],
    );
    for v in ["0.4.0", "1.0.0", "1.1.0"] {
        let pod = cni::add_pod(&node, &d.conf(v), &format!("p{}", v.replace('.', "")));
        let r = &pod.result;
        assert_eq!(r["cniVersion"], v);
        let ips = r["ips"].as_array().unwrap();
        assert_eq!(ips.len(), 2, "dual-stack: one address per family: {r}");
        assert_eq!(ips[0].get("version").is_some(), v == "0.4.0", "{v}: {r}");
        assert_eq!(r["interfaces"][1].get("mtu").is_some(), v == "1.1.0", "{v}: {r}");
        assert!(ips[1]["address"].as_str().unwrap().starts_with("fd00:10:244:1::"));
        // The dual-stack pod talks IPv6 through the datapath too.
        assert!(
            traffic::ping_ok(&pod.ns, "fd00:10:244:1::1".parse().unwrap()),
            "{v}: ping6 the gateway"
        );
    }
    // VERSION, with and without a request body.
    let out = cni::exec_raw(&node, &[("CNI_COMMAND", "VERSION")], br#"{"cniVersion":"1.0.0"}"#);
    let v = out.ok();
    assert_eq!(v["cniVersion"], "1.0.0");
    for want in ["0.4.0", "1.0.0", "1.1.0"] {
        assert!(
            v["supportedVersions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == want)
        );
    }
    assert_eq!(cni::exec_raw(&node, &[("CNI_COMMAND", "VERSION")], b"").status, 0);
}

#[test]
#[ignore = "privileged: run with `cargo xtask test` (root)"]
fn add_chains_prev_result_and_honours_static_requests() {
    require_root();
    let node = TestNs::new("node");
    let d = Sluiced::start(&node, &[]);
    // A previous plugin's result is kept and ours appended, interface indexes renumbered.
    let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "lo", "sandbox": "/x"}],
                      "ips": [{"address": "127.0.0.1/8", "interface": 0}], "dns": {}});
    let conf = conf_with(&d, "1.0.0", json!({"prevResult": prev}));
    let p = cni::add_pod(&node, &conf, "chain");
    let r = &p.result;
    assert_eq!(r["interfaces"][0]["name"], "lo");
    assert_eq!(r["interfaces"].as_array().unwrap().len(), 3);
    assert_eq!(r["ips"][1]["interface"], 2, "{r}");

    // runtimeConfig.ips and mac.
    let conf = conf_with(
        &d,
        "1.0.0",
        json!({"runtimeConfig": {"ips": ["10.244.1.77/24"], "mac": "02:aa:bb:cc:dd:01"}}),
    );
    let p = cni::add_pod(&node, &conf, "static");
    assert_eq!(p.ip4().to_string(), "10.244.1.77");
    assert_eq!(p.result["interfaces"][1]["mac"], "02:aa:bb:cc:dd:01");
    // CNI_ARGS IP= and MAC= (podman's --ip and --mac-address).
    let p2 = cni::add_pod_with(&node, &d.conf("1.0.0"), "args", |c| {
        c.with_args("IgnoreUnknown=1;IP=10.244.1.88;MAC=02:aa:bb:cc:dd:02")
    });
    assert_eq!(p2.ip4().to_string(), "10.244.1.88");
    assert_eq!(p2.result["interfaces"][1]["mac"], "02:aa:bb:cc:dd:02");
    assert!(traffic::ping_ok(&p.ns, p2.ip4()));
    // A taken address, an address outside the pod CIDR: 102, nothing left.
    let ns = TestNs::new("taken");
    let out = cni::exec(
        &node,
        &Call::new("ADD", "taken", &ns.path_str()).with_args("IP=10.244.1.88"),
        &d.conf("1.0.0"),
    );
    assert_eq!(out.code(), 102, "{}", out.stdout);
    let out = cni::exec(
        &node,
        &Call::new("ADD", "outside", &ns.path_str()).with_args("IP=10.9.9.9"),
        &d.conf("1.0.0"),
    );
    assert_eq!(out.code(), 102, "{}", out.stdout);
    assert!(out.json()["msg"].as_str().unwrap().contains("10.9.9.9"));
    assert!(!ns.has_link("eth0"));
    assert_eq!(
        d.leases().len(),
        3,
        "chain, static and args hold one address each"
    );
}

#[test]
#[ignore = "privileged: run with `cargo xtask test` (root)"]
fn every_del_variant_succeeds_and_releases() {
    require_root();
    let node = TestNs::new("node");
    let d = Sluiced::start(&node, &[]);
    let conf = d.conf("1.0.0");

    // With prevResult (podman stop, containerd Stop), then again without (second Stop), then
    // with an empty CNI_NETNS (containerd Remove).
    let a = cni::add_pod(&node, &conf, "a");
    let with_prev = conf_with(&d, "1.0.0", json!({"prevResult": a.result}));
    cni::exec(
        &node,
        &Call::new("DEL", &a.container_id, &a.ns.path_str()),
        &with_prev,
    )
    .ok();
    assert!(d.leases().is_empty());
    cni::exec(&node, &Call::new("DEL", &a.container_id, &a.ns.path_str()), &conf).ok();
    cni::exec(&node, &Call::new("DEL", &a.container_id, ""), &conf).ok();

    // The pod's netns is already gone (its veth went with it).
    let b = cni::add_pod(&node, &conf, "b");
    let (bid, bpath) = (b.container_id.clone(), b.ns.path_str());
    drop(b);
    cni::exec(&node, &Call::new("DEL", &bid, &bpath), &conf).ok();
    assert!(d.leases().is_empty() && d.endpoints().is_empty());
    assert!(maps::iface_entries(d.pin_dir()).is_empty());

    // After a failed ADD (podman sends DEL without prevResult), and for a never-added id.
    let ns = TestNs::new("failed");
    let out = cni::exec(
        &node,
        &Call::new("ADD", "failed", &ns.path_str()).with_args("IP=10.9.9.9"),
        &conf,
    );
    assert_ne!(out.status, 0);
    cni::exec(&node, &Call::new("DEL", "failed", &ns.path_str()), &conf).ok();
    cni::exec(
        &node,
        &Call::new("DEL", "never-seen", "/run/netns/slt-none"),
        &conf,
    )
    .ok();
    let pod_veths: Vec<String> = node
        .links()
        .into_iter()
        .filter(|l| l.len() == 14 && l.starts_with("sl"))
        .collect();
    assert!(pod_veths.is_empty(), "veths left: {pod_veths:?}");
}

#[test]
#[ignore = "privileged: run with `cargo xtask test` (root)"]
fn del_while_the_daemon_is_down_is_queued_and_applied() {
    require_root();
    let node = TestNs::new("node");
    let mut d = Sluiced::start(&node, &[]);
    d.keep_pins = true;
    let conf = d.conf("1.0.0");
    let a = cni::add_pod(&node, &conf, "a");
    let keep = cni::add_pod(&node, &conf, "keep");
    d.stop();
    // The runtime deletes the pod while sluiced is away: DEL still succeeds ...
    let out = cni::exec(&node, &Call::new("DEL", &a.container_id, &a.ns.path_str()), &conf);
    out.ok();
    assert!(
        !node.has_link(&a.host_ifname()),
        "the veth is deleted even with the daemon down"
    );
    let queue = d.socket.parent().unwrap().join("pending-del");
    let queued: Vec<_> = std::fs::read_dir(&queue).unwrap().flatten().collect();
    assert_eq!(queued.len(), 1, "one teardown queued");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&queue).unwrap().permissions().mode() & 0o777,
        0o700,
        "root-only queue"
    );
    // ... and CHECK says try again later, STATUS says not available.
    let c = conf_with(&d, "1.1.0", json!({"prevResult": keep.result}));
    assert_eq!(
        cni::exec(
            &node,
            &Call::new("CHECK", &keep.container_id, &keep.ns.path_str()),
            &c
        )
        .code(),
        11
    );
    assert_eq!(
        cni::exec(&node, &Call::new("STATUS", "", ""), &d.conf("1.1.0")).code(),
        50
    );
    // Back up: the queued teardown is applied, the other pod untouched.
    d.launch();
    let start = std::time::Instant::now();
    while d.leases().len() != 1 {
        assert!(
            start.elapsed().as_secs() < 10,
            "queued teardown not applied: {:?}",
            d.leases()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(d.leases()[0].attachment.container_id, keep.container_id);
    assert!(
        std::fs::read_dir(&queue).unwrap().next().is_none(),
        "queue drained"
    );
    assert!(traffic::ping_ok(&keep.ns, "10.244.1.1".parse().unwrap()));
    d.keep_pins = false;
}

#[test]
#[ignore = "privileged: run with `cargo xtask test` (root)"]
fn check_status_and_gc_like_libcni() {
    require_root();
    let node = TestNs::new("node");
    let d = Sluiced::start(&node, &[]);
    let conf = d.conf("1.1.0");
    // libcni: ADD, cache the result, CHECK with it as prevResult.
    let a = cni::add_pod(&node, &conf, "a");
    let b = cni::add_pod(&node, &conf, "b");
    let check = |p: &cni::Pod| {
        let c = conf_with(&d, "1.1.0", json!({"prevResult": p.result}));
        cni::exec(&node, &Call::new("CHECK", &p.container_id, &p.ns.path_str()), &c)
    };
    check(&a).ok();
    assert_eq!(cni::exec(&node, &Call::new("STATUS", "", ""), &conf).status, 0);
    // CHECK notices what broke: the pod's default route, or the datapath's program.
    assert!(
        a.ns.cmd("ip")
            .args(["route", "del", "default"])
            .status()
            .unwrap()
            .success()
    );
    let out = check(&a);
    assert_ne!(out.status, 0);
    assert!(
        out.json()["msg"].as_str().unwrap().contains("route"),
        "{}",
        out.stdout
    );
    // CHECK is not defined before 0.4.0; GC and STATUS not before 1.1.0.
    let old = conf_with(&d, "0.3.1", json!({"prevResult": b.result}));
    assert_eq!(
        cni::exec(
            &node,
            &Call::new("CHECK", &b.container_id, &b.ns.path_str()),
            &old
        )
        .code(),
        1
    );
    assert_eq!(
        cni::exec(&node, &Call::new("GC", "", ""), &d.conf("1.0.0")).code(),
        1
    );
    check(&b).ok();

    // GC keeps what libcni lists as valid and releases everything else (also leftovers the
    // runtime forgot to DEL). Without the list it refuses rather than release everything.
    assert_eq!(cni::exec(&node, &Call::new("GC", "", ""), &conf).code(), 7);
    let gc = conf_with(
        &d,
        "1.1.0",
        json!({"cni.dev/valid-attachments": [{"containerID": b.container_id, "ifname": "eth0"}]}),
    );
    cni::exec(&node, &Call::new("GC", "", ""), &gc).ok();
    let leases = d.leases();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].attachment.container_id, b.container_id);
    assert!(!node.has_link(&a.host_ifname()) || d.endpoints().len() == 1);
    // The older key works too; an empty list releases all.
    let gc = conf_with(&d, "1.1.0", json!({"cni.dev/attachments": []}));
    cni::exec(&node, &Call::new("GC", "", ""), &gc).ok();
    assert!(d.leases().is_empty() && d.endpoints().is_empty());
    // STATUS with no daemon at all.
    let down = conf_with(&d, "1.1.0", json!({"daemonSocket": "/run/slt-nowhere/s.sock"}));
    assert_eq!(cni::exec(&node, &Call::new("STATUS", "", ""), &down).code(), 50);
}
