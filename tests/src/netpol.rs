//! The upstream e2e model of NetworkPolicy testing: namespaces x, y, z with pods a, b, c each,
//! servers on TCP and UDP ports 80 and 81 in every pod, and a full 9x9 reachability matrix
//! per case, probed through the real datapath and compared with the expectation of the
//! reference evaluator (`sluice_policy::reference`) over the very manifests sluiced reads.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use sluice_api::{Request, Status};
use sluice_policy::model::Protocol;

use crate::{
    cni::{self, Pod},
    daemon::Sluiced,
    ns::TestNs,
};

pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const PODS: [&str; 3] = ["a", "b", "c"];
pub const PORTS: [(Protocol, u16); 4] = [
    (Protocol::Tcp, 80),
    (Protocol::Tcp, 81),
    (Protocol::Udp, 80),
    (Protocol::Udp, 81),
];
/// How long a probe waits before calling the connection denied (drops are silent).
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(700);

/// One pod of the model: `ns/name` with its namespace and its address.
pub struct ModelPod {
    pub ns: String,
    pub name: String,
    pub pod: Pod,
}

impl ModelPod {
    pub fn id(&self) -> String {
        format!("{}/{}", self.ns, self.name)
    }
}

/// A node running sluiced in manifests mode, with the nine pods and their servers.
pub struct Cluster {
    pub node: TestNs,
    pub daemon: Sluiced,
    pub manifests: tempfile::TempDir,
    pub pods: Vec<ModelPod>,
    stop: Arc<AtomicBool>,
    servers: Vec<std::thread::JoinHandle<()>>,
    /// Pod labels currently written (pod id -> labels).
    pub pod_labels: BTreeMap<String, BTreeMap<String, String>>,
    pub ns_labels: BTreeMap<String, BTreeMap<String, String>>,
}

fn labels_yaml(l: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = l.iter().map(|(k, v)| format!("{k:?}: {v:?}")).collect();
    format!("{{{}}}", parts.join(", "))
}

impl Default for Cluster {
    fn default() -> Self {
        Self::new()
    }
}

impl Cluster {
    pub fn new() -> Self {
        let node = TestNs::new("node");
        let manifests = tempfile::Builder::new()
            .prefix(&crate::prefix())
            .tempdir()
            .expect("tempdir");
        let daemon = Sluiced::start(&node, &["--manifests", manifests.path().to_str().expect("utf-8")]);
        let conf = daemon.conf("1.0.0");
        let mut c = Self {
            node,
            daemon,
            manifests,
            pods: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            servers: Vec::new(),
            pod_labels: BTreeMap::new(),
            ns_labels: BTreeMap::new(),
        };
        for ns in NAMESPACES {
            c.ns_labels
                .insert(ns.into(), [("ns".to_string(), ns.to_string())].into());
            for p in PODS {
                c.pod_labels
                    .insert(format!("{ns}/{p}"), [("pod".to_string(), p.to_string())].into());
            }
        }
        // Namespaces and Pods are known before the pods start, as in a cluster.
        let rev = c.revision();
        c.write_model();
        c.wait_applied(rev, |_| true);
        for ns in NAMESPACES {
            for p in PODS {
                let pod = cni::add_pod_with(&c.node, &conf, &format!("{ns}{p}"), |call| {
                    call.with_args(&format!(
                        "IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={p}"
                    ))
                });
                c.pods.push(ModelPod {
                    ns: ns.into(),
                    name: p.into(),
                    pod,
                });
            }
        }
        c.start_servers();
        c
    }

    /// (Re)write the Namespace and Pod manifests from the current labels.
    pub fn write_model(&self) {
        let mut y = String::new();
        for (ns, l) in &self.ns_labels {
            let _ = write!(
                y,
                "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels: {}\n",
                labels_yaml(l)
            );
        }
        for (id, l) in &self.pod_labels {
            let (ns, name) = id.split_once('/').expect("ns/name");
            let _ = write!(
                y,
                "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {}\nspec:\n  containers:\n  - name: c\n    image: none\n    ports:\n    - {{name: serve-80-tcp, containerPort: 80, protocol: TCP}}\n    - {{name: serve-81-tcp, containerPort: 81, protocol: TCP}}\n    - {{name: serve-80-udp, containerPort: 80, protocol: UDP}}\n    - {{name: serve-81-udp, containerPort: 81, protocol: UDP}}\n",
                labels_yaml(l)
            );
        }
        self.write_file("00-model.yaml", &y);
    }

    /// Write a manifest file atomically (temp + rename, as tools do).
    pub fn write_file(&self, name: &str, text: &str) {
        let tmp = self.manifests.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write manifest");
        std::fs::rename(&tmp, self.manifests.path().join(name)).expect("rename manifest");
    }

    pub fn remove_file(&self, name: &str) {
        let _ = std::fs::remove_file(self.manifests.path().join(name));
    }

    pub fn status(&self) -> Status {
        self.daemon.call(&Request::Status)
    }

    /// The revision of the objects sluiced has applied so far: take it *before* changing a
    /// manifest, then `wait_applied(rev)`.
    pub fn revision(&self) -> u64 {
        self.status().policy_revision
    }

    /// Wait until sluiced applied a revision after `before` (and `extra` holds). Returns how
    /// long the wait took.
    pub fn wait_applied(&self, before: u64, extra: impl Fn(&Status) -> bool) -> Duration {
        let start = Instant::now();
        loop {
            let s = self.status();
            if s.policy_revision > before && extra(&s) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "sluiced did not apply the change:\n{}",
                self.daemon.log_tail(20)
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Apply a policy manifest (file `name`) and wait until it is in force; returns the
    /// time from the write to sluiced having applied it.
    pub fn apply(&self, name: &str, yaml: &str) -> Duration {
        let rev = self.revision();
        let t = Instant::now();
        self.write_file(name, yaml);
        self.wait_applied(rev, |_| true);
        t.elapsed()
    }

    pub fn delete(&self, name: &str) -> Duration {
        let rev = self.revision();
        let t = Instant::now();
        self.remove_file(name);
        self.wait_applied(rev, |_| true);
        t.elapsed()
    }

    /// Rewrite the Namespace/Pod manifest and wait until it is applied.
    pub fn update_model(&self) -> Duration {
        let rev = self.revision();
        let t = Instant::now();
        self.write_model();
        self.wait_applied(rev, |_| true);
        t.elapsed()
    }

    fn start_servers(&mut self) {
        for mp in &self.pods {
            let ip = mp.pod.ip4();
            for (proto, port) in PORTS {
                let stop = self.stop.clone();
                let (tx, rx) = std::sync::mpsc::channel();
                let h = mp.pod.ns.spawn(move || serve(proto, ip, port, stop, tx));
                rx.recv_timeout(Duration::from_secs(5)).expect("server bound");
                self.servers.push(h);
            }
        }
    }

    pub fn pod(&self, id: &str) -> &ModelPod {
        self.pods
            .iter()
            .find(|p| p.id() == id)
            .unwrap_or_else(|| panic!("no pod {id}"))
    }

    /// The objects sluiced reads, parsed the way it parses them, with the pods' real
    /// addresses filled in: the reference evaluator's view.
    pub fn model(&self) -> sluice_policy::model::ClusterState {
        let mut objects = sluice_policy::manifests::Objects::default();
        let mut paths: Vec<PathBuf> = std::fs::read_dir(self.manifests.path())
            .expect("list manifests")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        paths.sort();
        for p in paths {
            let text = std::fs::read_to_string(&p).expect("read manifest");
            objects.merge(&sluice_policy::manifests::parse(&text).expect("manifest parses"));
        }
        let mut state = objects.state;
        for mp in &self.pods {
            if let Some(p) = state.pods.get_mut(&(mp.ns.clone(), mp.name.clone())) {
                p.ips = vec![mp.pod.ip4()];
            }
        }
        state
    }

    /// Probe every pair on every port, in parallel.
    pub fn probe(&self) -> Matrix {
        let mut handles = Vec::new();
        for from in &self.pods {
            for to in &self.pods {
                for (proto, port) in PORTS {
                    let dst = to.pod.ip4();
                    let key = (from.id(), to.id(), proto, port);
                    handles.push((key, from.pod.ns.spawn(move || probe_one(proto, dst, port))));
                }
            }
        }
        Matrix(
            handles
                .into_iter()
                .map(|(k, h)| (k, h.join().expect("probe thread")))
                .collect(),
        )
    }

    /// What the reference evaluator says of every pair and port.
    pub fn expected(&self) -> Matrix {
        let state = self.model();
        let mut m = BTreeMap::new();
        for from in &self.pods {
            for to in &self.pods {
                for (proto, port) in PORTS {
                    let ok = sluice_policy::reference::allowed(
                        &state,
                        from.pod.ip4(),
                        to.pod.ip4(),
                        proto,
                        port,
                        false,
                    );
                    m.insert((from.id(), to.id(), proto, port), ok);
                }
            }
        }
        Matrix(m)
    }

    /// Probe and compare with the reference; panic with both matrices on a difference.
    pub fn check(&self, case: &str) -> Matrix {
        let want = self.expected();
        let mut got = self.probe();
        if got != want {
            // A probe can lose a race with the machine being busy: probe the differences again.
            got = self.probe();
        }
        if got != want {
            panic!(
                "case {case}: reachability differs from the expectation\n{}\n{}",
                want.diff(&got),
                self.daemon.log_tail(15)
            );
        }
        got
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for h in self.servers.drain(..) {
            let _ = h.join();
        }
    }
}

fn serve(proto: Protocol, ip: IpAddr, port: u16, stop: Arc<AtomicBool>, bound: std::sync::mpsc::Sender<()>) {
    let addr = SocketAddr::new(ip, port);
    match proto {
        Protocol::Tcp => {
            let l = TcpListener::bind(addr).expect("bind tcp");
            l.set_nonblocking(true).expect("nonblocking");
            bound.send(()).ok();
            while !stop.load(Ordering::Acquire) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        std::thread::spawn(move || {
                            let mut buf = [0u8; 64];
                            if let Ok(n) = s.read(&mut buf) {
                                let _ = s.write_all(&buf[..n]);
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        }
        _ => {
            let s = UdpSocket::bind(addr).expect("bind udp");
            s.set_read_timeout(Some(Duration::from_millis(50)))
                .expect("timeout");
            bound.send(()).ok();
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Acquire) {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(&buf[..n], from);
                }
            }
        }
    }
}

/// One connection attempt with an echo; true when the echo came back.
pub fn probe_one(proto: Protocol, dst: IpAddr, port: u16) -> bool {
    let addr = SocketAddr::new(dst, port);
    match proto {
        Protocol::Tcp => {
            let Ok(mut s) = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) else {
                return false;
            };
            let _ = s.set_read_timeout(Some(PROBE_TIMEOUT));
            if s.write_all(b"probe").is_err() {
                return false;
            }
            let mut buf = [0u8; 16];
            matches!(s.read(&mut buf), Ok(5))
        }
        _ => {
            let Ok(s) = UdpSocket::bind("0.0.0.0:0") else {
                return false;
            };
            let _ = s.set_read_timeout(Some(PROBE_TIMEOUT));
            // Two tries: a lost datagram is not a policy verdict.
            for _ in 0..2 {
                if s.send_to(b"probe", addr).is_err() {
                    return false;
                }
                let mut buf = [0u8; 16];
                if let Ok((5, _)) = s.recv_from(&mut buf) {
                    return true;
                }
            }
            false
        }
    }
}

/// (from, to, protocol, port) -> reachable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matrix(pub BTreeMap<(String, String, Protocol, u16), bool>);

impl Matrix {
    pub fn get(&self, from: &str, to: &str, proto: Protocol, port: u16) -> bool {
        self.0[&(from.to_string(), to.to_string(), proto, port)]
    }

    /// Human-readable difference: expected vs observed per differing probe.
    pub fn diff(&self, got: &Matrix) -> String {
        let mut out = String::from("from -> to proto/port: expected observed\n");
        for (k, want) in &self.0 {
            let g = got.0.get(k).copied().unwrap_or(false);
            if g != *want {
                let _ = writeln!(out, "{} -> {} {:?}/{}: {} {}", k.0, k.1, k.2, k.3, want, g);
            }
        }
        out
    }

    pub fn count_allowed(&self) -> usize {
        self.0.values().filter(|v| **v).count()
    }
}
