//! Install and operate like a DaemonSet, on a simulated node: host paths are temp dirs, the
//! daemon runs with the DaemonSet's flags, the conflist appears only once it is ready, a
//! runtime-style ADD through the *installed* plugin works, metrics and health answer, and
//! `--uninstall` leaves the node clean.
//!
//! Privileged: `cargo xtask test` runs them as root.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use sluice_tests::{cni, daemon::Sluiced, ns::TestNs, require_root, traffic};

/// GET a path from the metrics address inside the node namespace.
fn http_get(node: &TestNs, port: u16, path: &str) -> (u16, String) {
    let path = path.to_owned();
    node.run(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("metrics address");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let code = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (code, out)
    })
}

#[test]
#[ignore = "privileged: run with `cargo xtask test` (root)"]
fn daemonset_style_install_operate_and_uninstall() {
    require_root();
    let node = TestNs::new("node");
    assert!(
        node.cmd("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap()
            .success()
    );
    let host = tempfile::Builder::new()
        .prefix(&sluice_tests::prefix())
        .tempdir()
        .unwrap();
    let (bin_dir, conf_dir) = (host.path().join("opt/cni/bin"), host.path().join("etc/cni/net.d"));
    let plugin = sluice_tests::bin("sluice");
    let args: Vec<String> = vec![
        "--install-cni".into(),
        format!("--cni-bin-dir={}", bin_dir.display()),
        format!("--cni-conf-dir={}", conf_dir.display()),
        format!("--cni-plugin-binary={}", plugin.display()),
        "--metrics-address=127.0.0.1:19962".into(),
        "--node-name=node-1".into(),
    ];
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    // Watch the conflist from the moment the daemon starts: it must never exist while the
    // socket does not accept connections.
    let conflist = conf_dir.join("05-sluice.conflist");
    let started = Instant::now();
    let d = Sluiced::start(&node, &arg_refs);
    let ready_after = started.elapsed();
    let t = Instant::now();
    while !conflist.exists() {
        assert!(t.elapsed() < Duration::from_secs(5), "no conflist once ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    let log = d.log_text();
    let (ready_at, installed_at) = (
        log.find("sluiced ready").unwrap(),
        log.find("CNI plugin installed").unwrap(),
    );
    assert!(
        ready_at < installed_at,
        "the conflist was written before the daemon was ready"
    );
    eprintln!(
        "ready and installed after {:.0} ms",
        ready_after.as_secs_f64() * 1e3
    );

    // The installed plugin is the built one, executable, and its conflist names our socket.
    let installed = bin_dir.join("sluice");
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(&plugin).unwrap()
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&installed).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let list: serde_json::Value = serde_json::from_slice(&std::fs::read(&conflist).unwrap()).unwrap();
    assert_eq!(list["cniVersion"], "1.0.0");
    let mut net = list["plugins"][0].clone();
    assert_eq!(net["daemonSocket"], d.socket.display().to_string());
    net["cniVersion"] = list["cniVersion"].clone();
    net["name"] = list["name"].clone();

    // A runtime-style ADD through the installed binary.
    let pod_ns = TestNs::new("pod");
    let out = {
        let mut cmd = std::process::Command::new("nsenter");
        cmd.arg(format!("--net={}", node.path_str()))
            .arg(&installed)
            .env_clear()
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", "installed-1")
            .env("CNI_NETNS", pod_ns.path_str())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &bin_dir)
            .env("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(net.to_string().as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(traffic::ping_ok(&pod_ns, "10.244.1.1".parse().unwrap()));

    // Operate: health, readiness and metrics with Prometheus naming.
    assert_eq!(http_get(&node, 19962, "/healthz").0, 200);
    assert_eq!(http_get(&node, 19962, "/readyz").0, 200);
    let (code, metrics) = http_get(&node, 19962, "/metrics");
    assert_eq!(code, 200);
    for name in [
        "sluice_cni_operations_total{operation=\"add\",result=\"success\"} 1",
        "sluice_cni_operation_duration_seconds_bucket",
        "sluice_endpoints 1",
        "sluice_ipam_addresses{pool=\"10.244.1.0/24\",state=\"used\"} 1",
        "sluice_drops_total{reason=\"policy_ingress\"}",
        "sluice_conntrack_entries",
        "sluice_map_entries{map=\"SL_IFACES\"} 1",
        "sluice_bpf_program_runs_total{program=\"from_pod\"}",
        "sluice_policy_apply_duration_seconds",
        "process_resident_memory_bytes",
    ] {
        assert!(metrics.contains(name), "metrics lack {name}:\n{metrics}");
    }
    // sluicectl against the daemon socket, with JSON for scripts.
    let ctl = std::process::Command::new(sluice_tests::bin("sluicectl"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["--output", "json", "endpoints"])
        .output()
        .unwrap();
    let eps: serde_json::Value = serde_json::from_slice(&ctl.stdout).unwrap();
    assert_eq!(eps[0]["pod"]["name"], "web");
    let _ = cni::Call::new("DEL", "x", "");

    // Uninstall: the daemon stops, then `sluiced --uninstall` with the same paths.
    let (socket, state_dir, bpffs) = (d.socket.clone(), d.state_dir.clone(), d.bpffs.clone());
    let mut d = d;
    d.keep_pins = true;
    d.stop();
    let un = node
        .cmd(sluice_tests::bin("sluiced"))
        .arg("--uninstall")
        .arg(format!("--cni-bin-dir={}", bin_dir.display()))
        .arg(format!("--cni-conf-dir={}", conf_dir.display()))
        .arg(format!("--bpffs={}", bpffs.display()))
        .arg(format!("--state-dir={}", state_dir.display()))
        .arg(format!("--socket={}", socket.display()))
        .output()
        .unwrap();
    assert!(
        un.status.success(),
        "uninstall failed: {}",
        String::from_utf8_lossy(&un.stderr)
    );
    let said = String::from_utf8_lossy(&un.stdout);
    eprintln!("{said}");
    assert!(
        !conflist.exists() && !installed.exists(),
        "conflist or plugin left"
    );
    assert!(!bpffs.exists(), "pins left");
    assert!(
        !state_dir.exists() && !socket.parent().unwrap().exists(),
        "state or socket dir left"
    );
    assert!(!node.has_link("sluice0"), "gateway device left");
    // The pod's veth is the pod's; but no sluice program runs on it any more.
    let host_veth = sluice_api::host_ifname("installed-1", "eth0");
    let tc = node
        .cmd("tc")
        .args(["qdisc", "show", "dev", &host_veth])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&tc.stdout).contains("clsact"),
        "clsact left on {host_veth}"
    );
    // Running it again is harmless.
    let again = node
        .cmd(sluice_tests::bin("sluiced"))
        .arg("--uninstall")
        .arg(format!("--bpffs={}", bpffs.display()))
        .arg(format!("--state-dir={}", state_dir.display()))
        .arg(format!("--socket={}", socket.display()))
        .arg(format!("--cni-bin-dir={}", bin_dir.display()))
        .arg(format!("--cni-conf-dir={}", conf_dir.display()))
        .output()
        .unwrap();
    assert!(again.status.success());
}
