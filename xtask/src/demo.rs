//! `cargo xtask demo`: a node namespace running sluiced, three pods wired by the real CNI
//! binary, traffic between them, the counters moving, and the datapath refusing a spoofed
//! source address, then everything removed again. Touches only namespaces named
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

fn pod_ip(result: &str) -> Result<String> {
    let v: serde_json::Value = serde_json::from_str(result)?;
    let a = v["ips"][0]["address"].as_str().context("no address in result")?;
    Ok(a.split('/').next().unwrap_or(a).to_owned())
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
    fn enter(ns: &str) -> Result<()> {
        let f = std::fs::File::open(format!("/run/netns/{ns}"))?;
        use std::os::fd::AsRawFd;
        // SAFETY: valid fd; only this thread switches.
        ensure!(
            unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } == 0,
            "setns {ns}"
        );
        Ok(())
    }
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
    let log = std::fs::File::create(dir.join("sluiced.log"))?;
    let daemon = in_ns(NODE, bin("sluiced").to_str().expect("utf-8"))
        .args(["--pod-cidr", "10.244.1.0/24", "--socket"])
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
        ips.push(pod_ip(&r)?);
    }
    sh::run(in_ns(PODS[0], "ip").args(["-br", "addr", "show", "eth0"]))?;
    sh::run(in_ns(PODS[0], "ip").args(["route"]))?;

    banner("4. pods talk: ICMP and TCP, handed pod to pod by bpf_redirect_peer");
    for (i, j) in [(0, 1), (1, 2), (2, 0)] {
        let ok = sh::quiet(in_ns(PODS[i], "ping").args(["-c", "3", "-i", "0.2", "-W", "1", &ips[j]]));
        println!(
            "   ping {} -> {} ({}): {}",
            PODS[i],
            PODS[j],
            ips[j],
            if ok { "ok" } else { "FAILED" }
        );
        ensure!(ok, "ping failed");
    }
    let gbps = tcp_transfer(PODS[0], PODS[1], &ips[1], 256 << 20)?;
    println!("   TCP {} -> {}: 256 MiB at {gbps:.1} Gbit/s", PODS[0], PODS[1]);
    println!("   counters (REDIRECT = packets the program handed straight to the destination pod):");
    ctl(&socket, &["endpoints"])?;

    banner("5. anti-spoofing: pod c sends from an address that is not its own");
    let mut monitor = Command::new(bin("sluicectl"))
        .arg("--socket")
        .arg(&socket)
        .args(["monitor", "--count", "3"])
        .stdout(Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(300));
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
        &ips[0],
    ]));
    println!(
        "   ping from 10.244.1.250 (spoofed) -> {}: {}",
        ips[0],
        if spoofed {
            "got through (unexpected)"
        } else {
            "dropped"
        }
    );
    ensure!(!spoofed, "the spoofed ping got through");
    let mut events = String::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) && monitor.try_wait()?.is_none() {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = monitor.kill();
    monitor
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut events)?;
    println!("   sluicectl monitor saw:");
    for l in events.lines() {
        println!("     {l}");
    }
    ctl(&socket, &["endpoints"])?;

    banner("6. CNI DEL for every pod; sluiced stops, the datapath is removed");
    for p in PODS {
        cni("DEL", p, &conf, &dir)?;
        println!("   DEL {p}: ok");
    }
    ctl(&socket, &["ipam"])?;
    drop(cleanup);
    println!("\ndemo done: namespaces, pins and state removed");
    Ok(())
}
