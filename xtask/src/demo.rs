//! `cargo xtask demo`: a node namespace running sluiced (dual-stack, policy from a manifests
//! directory), three pods wired by the real CNI binary, IPv4 and IPv6 traffic between them,
//! the counters moving, a NetworkPolicy letting one client in and keeping another out, the
//! datapath refusing a spoofed source address, then everything removed again. Touches only namespaces named
//! `sluicedemo-*` and the bpffs directory `/sys/fs/bpf/sluicedemo`.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

use crate::sh;

const NODE: &str = "sluicedemo-node";
const PODS: [&str; 3] = ["sluicedemo-a", "sluicedemo-b", "sluicedemo-c"];
const BPFFS: &str = "/sys/fs/bpf/sluicedemo";

fn banner(s: &str) {
    println!("\n\x1b[1m== {s}\x1b[0m");
}

fn ip(args: &[&str]) -> bool {
    sh::quiet(Command::new("ip").args(args))
}

fn in_ns(ns: &str, program: &str) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}")).arg(program);
    c
}

/// Removes everything the demo made, also when it fails half-way.
struct Cleanup {
    daemon: Option<Child>,
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
            let _ = d.wait();
        }
        for n in PODS.iter().chain([&NODE]) {
            ip(&["netns", "del", n]);
        }
        let _ = std::fs::remove_dir_all(BPFFS);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn bin(name: &str) -> PathBuf {
    sh::root().join("target/release").join(name)
}

fn cni(verb: &str, pod: &str, conf: &str, socket_dir: &Path) -> Result<String> {
    let mut child = in_ns(NODE, bin("sluice").to_str().expect("utf-8 path"))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", format!("{pod}-ctr"))
        .env("CNI_NETNS", format!("/run/netns/{pod}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", socket_dir)
        .env(
            "CNI_ARGS",
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME={}",
                pod.trim_start_matches("sluicedemo-")
            ),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child.stdin.take().expect("stdin").write_all(conf.as_bytes())?;
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    ensure!(out.status.success(), "CNI {verb} {pod} failed: {stdout}");
    Ok(stdout)
}

/// The pod's addresses from a CNI result, IPv4 first.
fn pod_ips(result: &str) -> Result<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(result)?;
    let mut out: Vec<String> = v["ips"]
        .as_array()
        .context("no ips in result")?
        .iter()
        .filter_map(|i| i["address"].as_str())
        .map(|a| a.split('/').next().unwrap_or(a).to_owned())
        .collect();
    out.sort_by_key(|a| a.contains(':'));
    ensure!(out.len() == 2, "expected an IPv4 and an IPv6 address: {result}");
    Ok(out)
}

const PODS_YAML: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: demo, labels: {team: demo}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: demo, labels: {role: client}}
spec: {containers: [{name: app, image: none}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: demo, labels: {app: web}}
spec: {containers: [{name: app, image: none, ports: [{name: http, containerPort: 5201}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: demo, labels: {role: intruder}}
spec: {containers: [{name: app, image: none}]}
";

/// Only `role: client` pods may open connections to the web pod, and only on its named port.
const POLICY_YAML: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-allow-clients, namespace: demo}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector: {matchLabels: {role: client}}
    ports:
    - {protocol: TCP, port: http}
";

/// Write a manifest the way a careful tool would: a temp name, then rename.
fn write_manifest(dir: &Path, name: &str, text: &str) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(name))?;
    Ok(())
}

/// The daemon's policy revision (bumps each time it applies new objects).
fn policy_revision(socket: &Path) -> Result<u64> {
    let out = Command::new(bin("sluicectl"))
        .arg("--socket")
        .arg(socket)
        .args(["--output", "json", "status"])
        .output()?;
    ensure!(out.status.success(), "sluicectl status failed");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    v["policy_revision"]
        .as_u64()
        .context("no policy_revision in status")
}

/// Wait for the daemon to apply a change made after it was at revision `before`.
fn wait_applied(socket: &Path, before: u64) -> Result<Duration> {
    let start = Instant::now();
    while policy_revision(socket)? <= before {
        ensure!(
            start.elapsed() < Duration::from_secs(10),
            "sluiced did not apply the change"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(start.elapsed())
}

/// Whether a TCP connection from pod `from` to `to_ip:port` is accepted within a second.
fn tcp_connects(from: &str, to: &str, to_ip: &str, port: u16) -> Result<bool> {
    let addr: SocketAddr = if to_ip.contains(':') {
        format!("[{to_ip}]:{port}")
    } else {
        format!("{to_ip}:{port}")
    }
    .parse()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let to = to.to_owned();
    let server = std::thread::spawn(move || -> Result<()> {
        enter(&to)?;
        let l = TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        tx.send(()).ok();
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(1500) {
            if l.accept().is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    });
    rx.recv_timeout(Duration::from_secs(5))?;
    let from = from.to_owned();
    let ok = std::thread::spawn(move || -> Result<bool> {
        enter(&from)?;
        Ok(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("client panicked"))??;
    server
        .join()
        .map_err(|_| anyhow::anyhow!("listener panicked"))??;
    Ok(ok)
}

/// `sluicectl monitor --count N` running in the background while the demo makes traffic.
struct Monitor(Child);

impl Monitor {
    fn start(socket: &Path, count: u32) -> Result<Self> {
        let child = Command::new(bin("sluicectl"))
            .arg("--socket")
            .arg(socket)
            .args(["monitor", "--count", &count.to_string()])
            .stdout(Stdio::piped())
            .spawn()?;
        // Let it subscribe before the traffic starts.
        std::thread::sleep(Duration::from_millis(300));
        Ok(Self(child))
    }

    /// The events seen (waits up to 3 s for the count to be reached).
    fn finish(mut self) -> Result<String> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) && self.0.try_wait()?.is_none() {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        let mut events = String::new();
        self.0
            .stdout
            .take()
            .expect("stdout")
            .read_to_string(&mut events)?;
        Ok(events)
    }
}

/// Move this thread into the network namespace `/run/netns/NS`.
fn enter(ns: &str) -> Result<()> {
    crate::bench::netns::enter(Path::new(&format!("/run/netns/{ns}")))
}

fn ctl(socket: &Path, args: &[&str]) -> Result<()> {
    sh::run(
        Command::new(bin("sluicectl"))
            .arg("--socket")
            .arg(socket)
            .args(args),
    )
}

/// Move `bytes` over TCP from pod `from` to pod `to` (a listener and a sender on threads
/// inside the pods' namespaces); returns the rate in Gbit/s.
fn tcp_transfer(from: &str, to: &str, to_ip: &str, bytes: usize) -> Result<f64> {
    let addr: SocketAddr = format!("{to_ip}:5201").parse()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let to = to.to_owned();
    let server = std::thread::spawn(move || -> Result<usize> {
        enter(&to)?;
        let l = TcpListener::bind(addr)?;
        tx.send(()).ok();
        let (mut s, _) = l.accept()?;
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    });
    rx.recv_timeout(Duration::from_secs(5))?;
    let from = from.to_owned();
    let elapsed = std::thread::spawn(move || -> Result<Duration> {
        enter(&from)?;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        let chunk = vec![0x5au8; 1 << 16];
        let start = Instant::now();
        let mut sent = 0;
        while sent < bytes {
            s.write_all(&chunk)?;
            sent += chunk.len();
        }
        drop(s);
        Ok(start.elapsed())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    let got = server
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))??;
    ensure!(got >= bytes, "received {got} of {bytes} bytes");
    Ok(got as f64 * 8.0 / elapsed.as_secs_f64() / 1e9)
}

pub fn run() -> Result<()> {
    ensure!(
        sh::is_root(),
        "the demo creates network namespaces and loads eBPF programs: run it as root"
    );
    let dir = std::env::temp_dir().join(format!("sluicedemo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut cleanup = Cleanup {
        daemon: None,
        dir: dir.clone(),
    };
    // Leftovers of an interrupted earlier demo (our names only).
    for n in PODS.iter().chain([&NODE]) {
        ip(&["netns", "del", n]);
    }
    let _ = std::fs::remove_dir_all(BPFFS);

    banner("1. a node (network namespace) and three pod namespaces");
    for n in [NODE].iter().chain(PODS.iter()) {
        ensure!(ip(&["netns", "add", n]), "ip netns add {n}");
        ensure!(ip(&["-n", n, "link", "set", "lo", "up"]));
        println!("   netns {n}");
    }

    banner("2. sluiced in the node: loads and pins the eBPF datapath, serves its socket");
    let socket = dir.join("sluiced.sock");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests)?;
    // What the kubelet would know of the pods: their labels and container ports.
    write_manifest(&manifests, "10-pods.yaml", PODS_YAML)?;
    let log = std::fs::File::create(dir.join("sluiced.log"))?;
    let daemon = in_ns(NODE, bin("sluiced").to_str().expect("utf-8"))
        .args(["--pod-cidr", "10.244.1.0/24", "--pod-cidr", "fd00:10:244:1::/64"])
        .arg("--manifests")
        .arg(&manifests)
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--bpffs", BPFFS])
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()?;
    cleanup.daemon = Some(daemon);
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        if start.elapsed() > Duration::from_secs(15) {
            bail!(
                "sluiced did not become ready:\n{}",
                std::fs::read_to_string(dir.join("sluiced.log"))?
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "   ready in {:.0} ms; pins under {BPFFS}",
        start.elapsed().as_secs_f64() * 1e3
    );
    ctl(&socket, &["status"])?;

    banner("3. the runtime's part: CNI ADD through the real plugin binary, one per pod");
    let conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "sluice",
        "daemonSocket": socket.display().to_string(),
    })
    .to_string();
    println!("   network config: {conf}");
    let mut ips = Vec::new();
    for p in PODS {
        let t = Instant::now();
        let r = cni("ADD", p, &conf, &dir)?;
        println!("   ADD {p} ({:.1} ms): {r}", t.elapsed().as_secs_f64() * 1e3);
        ips.push(pod_ips(&r)?);
    }
    sh::run(in_ns(PODS[0], "ip").args(["-br", "addr", "show", "eth0"]))?;
    sh::run(in_ns(PODS[0], "ip").args(["route"]))?;

    banner("4. pods talk: ICMP over IPv4 and IPv6 and TCP, handed pod to pod by bpf_redirect_peer");
    for (i, j) in [(0, 1), (1, 2), (2, 0)] {
        for addr in &ips[j] {
            let ok = sh::quiet(in_ns(PODS[i], "ping").args(["-c", "3", "-i", "0.2", "-W", "1", addr]));
            println!(
                "   ping {} -> {} ({addr}): {}",
                PODS[i],
                PODS[j],
                if ok { "ok" } else { "FAILED" }
            );
            ensure!(ok, "ping failed");
        }
    }
    let gbps = tcp_transfer(PODS[0], PODS[1], &ips[1][0], 256 << 20)?;
    println!("   TCP {} -> {}: 256 MiB at {gbps:.1} Gbit/s", PODS[0], PODS[1]);
    println!("   counters (REDIRECT = packets the program handed straight to the destination pod):");
    ctl(&socket, &["endpoints"])?;

    banner("5. NetworkPolicy: only role=client pods may open connections to pod b, on its port named http");
    for (i, name) in [(0, "a (role=client)"), (2, "c (role=intruder)")] {
        for addr in &ips[1] {
            let ok = tcp_connects(PODS[i], PODS[1], addr, 5201)?;
            println!(
                "   before: TCP {name} -> b [{addr}]:5201: {}",
                if ok { "connected" } else { "REFUSED" }
            );
            ensure!(ok, "no policy yet, yet the connection failed");
        }
    }
    let monitor = Monitor::start(&socket, 2)?;
    let rev = policy_revision(&socket)?;
    write_manifest(&manifests, "20-policy.yaml", POLICY_YAML)?;
    let took = wait_applied(&socket, rev)?;
    println!("   wrote 20-policy.yaml into the manifests dir:");
    for l in POLICY_YAML.lines() {
        println!("     {l}");
    }
    println!(
        "   sluiced compiled it into the datapath {:.0} ms after the file appeared",
        took.as_secs_f64() * 1e3
    );
    for (i, name, want) in [(0, "a (role=client)", true), (2, "c (role=intruder)", false)] {
        for addr in &ips[1] {
            let ok = tcp_connects(PODS[i], PODS[1], addr, 5201)?;
            println!(
                "   after:  TCP {name} -> b [{addr}]:5201: {}",
                if ok { "connected" } else { "dropped by policy" }
            );
            ensure!(ok == want, "policy verdict wrong for {name} -> {addr}");
        }
    }
    println!("   sluicectl policy demo/b:");
    ctl(&socket, &["policy", "demo/b"])?;
    println!("   sluicectl monitor saw:");
    for l in monitor.finish()?.lines() {
        println!("     {l}");
    }
    let rev = policy_revision(&socket)?;
    std::fs::remove_file(manifests.join("20-policy.yaml"))?;
    wait_applied(&socket, rev)?;
    let ok = tcp_connects(PODS[2], PODS[1], &ips[1][0], 5201)?;
    println!(
        "   policy file removed: c -> b {}",
        if ok { "connects again" } else { "STILL REFUSED" }
    );
    ensure!(ok, "removing the policy did not reopen pod b");

    banner("6. anti-spoofing: pod c sends from an address that is not its own");
    let monitor = Monitor::start(&socket, 3)?;
    sh::run(in_ns(PODS[2], "ip").args(["addr", "add", "10.244.1.250/32", "dev", "eth0"]))?;
    let spoofed = sh::quiet(in_ns(PODS[2], "ping").args([
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "1",
        "-I",
        "10.244.1.250",
        &ips[0][0],
    ]));
    println!(
        "   ping from 10.244.1.250 (spoofed) -> {}: {}",
        ips[0][0],
        if spoofed {
            "got through (unexpected)"
        } else {
            "dropped"
        }
    );
    ensure!(!spoofed, "the spoofed ping got through");
    let events = monitor.finish()?;
    println!("   sluicectl monitor saw:");
    for l in events.lines() {
        println!("     {l}");
    }
    ctl(&socket, &["endpoints"])?;

    banner("7. CNI DEL for every pod; sluiced stops, the datapath is removed");
    for p in PODS {
        cni("DEL", p, &conf, &dir)?;
        println!("   DEL {p}: ok");
    }
    ctl(&socket, &["ipam"])?;
    drop(cleanup);
    println!("\ndemo done: namespaces, pins and state removed");
    Ok(())
}
