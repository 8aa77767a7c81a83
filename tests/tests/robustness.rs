//! Robustness: concurrency, crashes, restarts, upgrades and pool changes, with the real
//! binaries. Figures (ADD counts, kills) are printed for the issue notes.
//!
//! Privileged: `cargo xtask test` runs them as root.

use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sluice_tests::{
    cni::{self, Call},
    daemon::Sluiced,
    maps,
    ns::TestNs,
    require_root, traffic,
};

/// Pod veths on the node (`sl` + 12 hex digits).
fn pod_veths(node: &TestNs) -> Vec<String> {
    node.links()
        .into_iter()
        .filter(|l| l.len() == 14 && l.starts_with("sl"))
        .collect()
}

/// The datapath and the daemon agree with `live` (container id -> address) and hold nothing else.
fn assert_consistent(node: &TestNs, d: &Sluiced, live: &BTreeMap<String, IpAddr>) {
    let leases = d.leases();
    let by_id: BTreeMap<String, IpAddr> = leases
        .iter()
        .map(|l| (l.attachment.container_id.clone(), l.address))
        .collect();
    assert_eq!(
        by_id.len(),
        leases.len(),
        "an attachment holds two addresses of a family"
    );
    let unique: HashSet<IpAddr> = leases.iter().map(|l| l.address).collect();
    assert_eq!(unique.len(), leases.len(), "an address is leased twice");
    assert_eq!(&by_id, live, "leases differ from the live pods");
    let eps = d.endpoints();
    assert_eq!(eps.len(), live.len(), "endpoints differ from the live pods");
    let veths = pod_veths(node);
    assert_eq!(
        veths.len(),
        live.len(),
        "veths differ from the live pods: {veths:?}"
    );
    assert_eq!(
        maps::iface_entries(d.pin_dir()).len(),
        live.len(),
        "SL_IFACES entries"
    );
    let mut addrs = maps::endpoint_addresses(d.pin_dir());
    addrs.sort();
    let mut want: Vec<IpAddr> = live.values().copied().collect();
    want.sort();
    assert_eq!(addrs, want, "SL_ENDPOINTS entries");
}

#[test]
#[ignore = "privileged: run with `cargo xtask test` (root)"]
fn fifty_parallel_adds_then_dels_leave_nothing() {
    require_root();
    let node = Arc::new(TestNs::new("node"));
    let d = Sluiced::start(&node, &[]);
    let conf = Arc::new(d.conf("1.0.0"));
    let pods: Vec<TestNs> = (0..50).map(|i| TestNs::new(&format!("p{i}"))).collect();
    let paths: Vec<(String, String)> = pods
        .iter()
        .map(|p| (format!("{}-c", p.name), p.path_str()))
        .collect();
    let started = Instant::now();
    let results: Vec<(String, cni::Output)> = std::thread::scope(|s| {
        let hs: Vec<_> = paths
            .iter()
            .map(|(id, path)| {
                let (node, conf) = (node.clone(), conf.clone());
                s.spawn(move || (id.clone(), cni::exec(&node, &Call::new("ADD", id, path), &conf)))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wall = started.elapsed();
    let mut live = BTreeMap::new();
    for (id, out) in &results {
        let r = out.ok();
        let ip: IpAddr = r["ips"][0]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        live.insert(id.clone(), ip);
    }
    eprintln!("50 parallel ADDs in {:.0} ms", wall.as_secs_f64() * 1e3);
    assert_consistent(&node, &d, &live);
    // Every pod is reachable from the first one.
    let first = &pods[0];
    for ip in live.values().take(10) {
        assert!(traffic::ping_ok(first, *ip));
    }
    std::thread::scope(|s| {
        for (id, path) in &paths {
            let (node, conf) = (node.clone(), conf.clone());
            s.spawn(move || cni::exec(&node, &Call::new("DEL", id, path), &conf).ok());
        }
    });
    assert_consistent(&node, &d, &BTreeMap::new());
    d.wait_tcx();
    assert!(d.link_pins().is_empty(), "link pins left: {:?}", d.link_pins());
}

/// What a worker believes about its pod after its last operation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Known {
    Live,
    Gone,
}

#[test]
#[ignore = "privileged: run with `cargo xtask test` (root)"]
fn storm_with_kill_dash_nine_keeps_leases_exact() {
    require_root();
    let node = Arc::new(TestNs::new("node"));
    let d = Arc::new(Mutex::new(Sluiced::start(&node, &[])));
    d.lock().unwrap().keep_pins = true;
    let conf = Arc::new(d.lock().unwrap().conf("1.0.0"));
    const SLOTS: usize = 24;
    let pods: Vec<TestNs> = (0..SLOTS).map(|i| TestNs::new(&format!("s{i}"))).collect();
    let slots: Vec<(String, String)> = pods
        .iter()
        .map(|p| (format!("{}-c", p.name), p.path_str()))
        .collect();
    // Container ID -> what the storm knows of it and the address its ADD returned.
    type Ledger = BTreeMap<String, (Known, Option<IpAddr>)>;
    let state: Arc<Mutex<Ledger>> = Arc::new(Mutex::new(BTreeMap::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let counts = Arc::new(Mutex::new((0u32, 0u32, 0u32))); // adds ok, adds refused, dels
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (node, conf, state, stop, counts) = (
                node.clone(),
                conf.clone(),
                state.clone(),
                stop.clone(),
                counts.clone(),
            );
            let my: Vec<(String, String)> = slots.iter().skip(w).step_by(4).cloned().collect();
            std::thread::spawn(move || {
                let mut round = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    for (id, path) in &my {
                        let live = state.lock().unwrap().get(id).map(|s| s.0) == Some(Known::Live);
                        if !live {
                            let out = cni::exec(&node, &Call::new("ADD", id, path), &conf);
                            if out.status == 0 {
                                let ip = out.json()["ips"][0]["address"]
                                    .as_str()
                                    .unwrap()
                                    .split('/')
                                    .next()
                                    .unwrap()
                                    .parse()
                                    .ok();
                                state.lock().unwrap().insert(id.clone(), (Known::Live, ip));
                                counts.lock().unwrap().0 += 1;
                            } else {
                                // A failed ADD is followed by a DEL, as runtimes do.
                                counts.lock().unwrap().1 += 1;
                                cni::exec(&node, &Call::new("DEL", id, path), &conf).ok();
                                state.lock().unwrap().insert(id.clone(), (Known::Gone, None));
                            }
                        } else if round % 2 == 1 {
                            cni::exec(&node, &Call::new("DEL", id, path), &conf).ok();
                            state.lock().unwrap().insert(id.clone(), (Known::Gone, None));
                            counts.lock().unwrap().2 += 1;
                        }
                    }
                    round += 1;
                }
            })
        })
        .collect();
    let mut kills = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(12) {
        std::thread::sleep(Duration::from_millis(400 + (kills * 137 % 600) as u64));
        let mut g = d.lock().unwrap();
        g.kill9();
        kills += 1;
        std::thread::sleep(Duration::from_millis(100));
        g.launch();
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    for w in workers {
        w.join().unwrap();
    }
    let (adds, refused, dels) = *counts.lock().unwrap();
    eprintln!(
        "storm: {adds} ADDs succeeded, {refused} refused while sluiced was down, {dels} DELs, {kills} kill -9s"
    );
    assert!(
        kills >= 8 && adds >= 20,
        "the storm did too little: {adds} ADDs, {kills} kills"
    );
    let live: BTreeMap<String, IpAddr> = state
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, s)| s.0 == Known::Live)
        .map(|(id, s)| (id.clone(), s.1.unwrap()))
        .collect();
    // Teardowns queued while the daemon was down are applied within a few seconds.
    let g = d.lock().unwrap();
    let t = Instant::now();
    while g.leases().len() != live.len() && t.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_consistent(&node, &g, &live);
    // Live pods still talk.
    let live_pods: Vec<&TestNs> = pods
        .iter()
        .filter(|p| live.contains_key(&format!("{}-c", p.name)))
        .collect();
    if live_pods.len() >= 2 {
        let ip = live[&format!("{}-c", live_pods[1].name)];
        assert!(traffic::ping_ok(live_pods[0], ip));
    }
    drop(g);
    let mut g = d.lock().unwrap();
    g.keep_pins = false;
}

#[test]
#[ignore = "privileged: run with `cargo xtask test` (root)"]
fn restart_and_upgrade_keep_traffic_flowing() {
    require_root();
    let node = TestNs::new("node");
    let mut d = Sluiced::start(&node, &[]);
    d.keep_pins = true;
    let conf = d.conf("1.0.0");
    let a = cni::add_pod(&node, &conf, "a");
    let b = cni::add_pod(&node, &conf, "b");
    d.wait_tcx();
    let c = cni::add_pod(&node, &conf, "c"); // may still be on clsact at the restart
    let (ib, ic) = (b.ip4(), c.ip4());
    // A long-lived TCP connection and a ping flood across two restarts.
    // An echo server that keeps its connection for the whole test.
    let (tx, rx) = std::sync::mpsc::channel();
    let srv = b.ns.spawn(move || -> std::io::Result<()> {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind((ib, 9000))?;
        tx.send(()).ok();
        let (mut s, _) = l.accept()?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut buf = [0u8; 64];
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            s.write_all(&buf[..n])?;
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let conn = a.ns.spawn(move || {
        let s = std::net::TcpStream::connect_timeout(&(ib, 9000).into(), Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    });
    let mut stream = conn.join().unwrap();
    let flood = |from: &TestNs, to: IpAddr| {
        from.cmd("ping")
            .args(["-c", "200", "-i", "0.01", "-W", "1", "-q", &to.to_string()])
            .output()
            .unwrap()
    };
    let loss = |out: &std::process::Output| {
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let rx: u32 = text
            .split(" received")
            .next()
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        200 - rx
    };
    // 1. Plain restart: SIGTERM, start again; the same object re-adopts everything.
    let h = std::thread::scope(|s| {
        let f = s.spawn(|| flood(&a.ns, ic));
        std::thread::sleep(Duration::from_millis(300));
        d.stop();
        std::thread::sleep(Duration::from_millis(300));
        d.launch();
        f.join().unwrap()
    });
    assert_eq!(
        loss(&h),
        0,
        "pings lost across a restart: {}",
        String::from_utf8_lossy(&h.stdout)
    );
    assert!(
        d.log_text().contains("outcome=Readopted"),
        "the restart did not re-adopt the datapath"
    );
    // 2. Upgrade: make the pinned programs look like another build's; the new daemon swaps
    //    the program behind every link atomically and keeps the maps.
    d.stop();
    let record = d.state_dir.join("datapath.json");
    let text = std::fs::read_to_string(&record).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let old = v["object"].as_str().unwrap().to_owned();
    std::fs::write(&record, text.replace(&old, "0000000000000000older-build")).unwrap();
    let h = std::thread::scope(|s| {
        let f = s.spawn(|| flood(&a.ns, ib));
        std::thread::sleep(Duration::from_millis(200));
        d.launch();
        f.join().unwrap()
    });
    assert_eq!(loss(&h), 0, "pings lost across an upgrade");
    let log = d.log_text();
    assert!(log.contains("outcome=Upgraded"), "not treated as an upgrade");
    assert!(log.contains("upgraded the program behind every pinned link"));
    // The long-lived connection survived both.
    {
        use std::io::{Read, Write};
        stream.write_all(b"after").unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(
            stream.read(&mut buf).unwrap(),
            5,
            "the established connection broke"
        );
    }
    drop(stream);
    let _ = srv.join();
    let live: BTreeMap<String, IpAddr> = [&a, &b, &c]
        .iter()
        .map(|p| (p.container_id.clone(), p.ip4()))
        .collect();
    assert_consistent(&node, &d, &live);
    d.keep_pins = false;
}

#[test]
#[ignore = "privileged: run with `cargo xtask test` (root)"]
fn the_pool_can_be_resized_without_losing_leases() {
    require_root();
    let node = TestNs::new("node");
    let mut d = Sluiced::start(&node, &["--pod-cidr", "10.244.1.0/26"]);
    d.keep_pins = true;
    let conf = d.conf("1.0.0");
    let pods: Vec<_> = (0..4)
        .map(|i| cni::add_pod(&node, &conf, &format!("r{i}")))
        .collect();
    let before: BTreeMap<String, IpAddr> = pods.iter().map(|p| (p.container_id.clone(), p.ip4())).collect();
    // Grow: every lease stays, new pods get other addresses.
    d.stop();
    d.set_extra_args(&["--pod-cidr", "10.244.1.0/25"]);
    d.launch();
    assert_consistent(&node, &d, &before);
    let e = cni::add_pod(&node, &conf, "grown");
    assert!(!before.values().any(|ip| *ip == e.ip4()));
    // Shrink below a live pod's address: the lease stays with its pod (not handed out again).
    d.stop();
    d.set_extra_args(&["--pod-cidr", "10.244.1.0/30"]);
    d.launch();
    let leases = d.leases();
    assert_eq!(leases.len(), 5, "leases lost when the CIDR shrank: {leases:?}");
    assert!(d.log_text().contains("outside today's pod CIDRs"));
    for p in &pods {
        assert!(traffic::ping_ok(&p.ns, "10.244.1.1".parse().unwrap()));
    }
    d.keep_pins = false;
}

#[test]
#[ignore = "privileged: run with `cargo xtask test` (root)"]
fn pins_of_another_abi_are_refused_until_reset() {
    require_root();
    let node = TestNs::new("node");
    let mut d = Sluiced::start(&node, &[]);
    d.stop();
    // What an older daemon (ABI 2: before cross-node routing changed two map values) recorded.
    let record = d.state_dir.join("datapath.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    let abi = v["abi"].as_u64().unwrap();
    v["abi"] = serde_json::json!(abi - 1);
    std::fs::write(&record, serde_json::to_vec(&v).unwrap()).unwrap();
    let refused = d
        .try_launch()
        .expect_err("a daemon re-adopted maps of another ABI");
    assert!(
        refused.contains(&format!("ABI {} pinned, this daemon speaks ABI {abi}", abi - 1)),
        "the refusal does not say why:\n{refused}"
    );
    // The documented way forward: start over with a fresh datapath.
    d.set_extra_args(&["--reset-datapath"]);
    d.launch();
    let s: sluice_api::Status = d.call(&sluice_api::Request::Status);
    assert!(s.ready);
}
