//! Simulated multi-node clusters on one machine: a "fabric" namespace holds a bridge that
//! joins every node's uplink; each node is a namespace running its own sluiced (own socket,
//! state dir and bpffs dir) with `--node-name` and `--routing`; pods are namespaces behind
//! their node. All daemons read one manifests directory holding the Node objects (and the
//! Pod and NetworkPolicy objects tests add), as they would watch one API server. Nothing
//! leaves the machine: the fabric has no uplink.

use std::{fmt::Write as _, net::IpAddr, process::Command};

use crate::{
    cni::{self, Pod},
    daemon::Sluiced,
    ns::TestNs,
};

/// Which address families pods (and the underlay) use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Families {
    V4,
    V6,
    Dual,
}

impl Families {
    pub fn v4(self) -> bool {
        self != Families::V6
    }
    pub fn v6(self) -> bool {
        self != Families::V4
    }
}

pub struct SimNode {
    pub name: String,
    pub ns: TestNs,
    pub daemon: Option<Sluiced>,
    pub underlay: Vec<IpAddr>,
    pub pod_cidrs: Vec<String>,
}

impl SimNode {
    pub fn daemon(&self) -> &Sluiced {
        self.daemon.as_ref().expect("node's daemon is running")
    }
}

pub struct Cluster {
    pub fabric: TestNs,
    pub nodes: Vec<SimNode>,
    pub manifests: tempfile::TempDir,
    pub routing: &'static str,
    pub families: Families,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Cluster {
    /// `n` nodes routing with `routing` (`native` or `vxlan`), pods of `families`. The underlay
    /// is IPv4 unless pods are IPv6-only.
    pub fn new(routing: &'static str, n: usize, families: Families) -> Self {
        let fabric = TestNs::new("fab");
        run(fabric.cmd("ip").args(["link", "add", "br0", "type", "bridge"]));
        run(fabric.cmd("ip").args(["link", "set", "br0", "up"]));
        let manifests = tempfile::Builder::new()
            .prefix(&crate::prefix())
            .tempdir()
            .expect("tempdir");
        let mut c = Self {
            fabric,
            nodes: Vec::new(),
            manifests,
            routing,
            families,
        };
        for _ in 0..n {
            c.add_node();
        }
        c
    }

    /// Create one more node: namespace, uplink into the fabric, its Node object, its daemon.
    pub fn add_node(&mut self) -> usize {
        let i = self.nodes.len() + 1;
        let ns = TestNs::new(&format!("n{i}"));
        let fab_end = format!("{}u", ns.name);
        let fab_end = fab_end[fab_end.len().saturating_sub(15)..].to_string();
        run(Command::new("ip").args([
            "link",
            "add",
            "uplink0",
            "netns",
            &ns.name,
            "type",
            "veth",
            "peer",
            "name",
            &fab_end,
            "netns",
            &self.fabric.name,
        ]));
        run(self
            .fabric
            .cmd("ip")
            .args(["link", "set", &fab_end, "master", "br0", "up"]));
        let mut underlay = Vec::new();
        if self.families != Families::V6 {
            let a = format!("192.168.50.{i}");
            run(ns
                .cmd("ip")
                .args(["addr", "add", &format!("{a}/24"), "dev", "uplink0"]));
            underlay.push(a.parse().unwrap());
        }
        if self.families.v6() {
            let a = format!("fd00:50::{i}");
            run(ns
                .cmd("ip")
                .args(["addr", "add", &format!("{a}/64"), "dev", "uplink0", "nodad"]));
            underlay.push(a.parse().unwrap());
        }
        run(ns.cmd("ip").args(["link", "set", "uplink0", "up"]));
        let mut pod_cidrs = Vec::new();
        if self.families.v4() {
            pod_cidrs.push(format!("10.244.{i}.0/24"));
        }
        if self.families.v6() {
            pod_cidrs.push(format!("fd00:10:244:{i}::/64"));
        }
        self.nodes.push(SimNode {
            name: format!("node-{i}"),
            ns,
            daemon: None,
            underlay,
            pod_cidrs,
        });
        self.write_nodes();
        let idx = self.nodes.len() - 1;
        self.start(idx);
        idx
    }

    /// Start (or restart) a node's daemon, as a DaemonSet would: its name, the routing mode,
    /// the shared objects; the pod CIDR comes from its Node object.
    pub fn start(&mut self, idx: usize) {
        let dir = self.manifests.path().display().to_string();
        let node = &mut self.nodes[idx];
        let args = [
            "--node-name",
            &node.name,
            "--routing",
            self.routing,
            "--manifests",
            &dir,
        ];
        node.daemon = Some(Sluiced::start_without_cidr(&node.ns, &args));
    }

    /// (Re)write the Node objects of the nodes currently in the cluster.
    pub fn write_nodes(&self) {
        let mut y = String::new();
        for n in &self.nodes {
            let cidrs: Vec<String> = n.pod_cidrs.iter().map(|c| format!("{c:?}")).collect();
            let addrs: Vec<String> = n
                .underlay
                .iter()
                .map(|a| format!("{{type: InternalIP, address: {:?}}}", a.to_string()))
                .collect();
            let _ = write!(
                y,
                "---\napiVersion: v1\nkind: Node\nmetadata: {{name: {}}}\nspec: {{podCIDRs: [{}]}}\nstatus: {{addresses: [{}]}}\n",
                n.name,
                cidrs.join(", "),
                addrs.join(", ")
            );
        }
        self.write_file("00-nodes.yaml", &y);
    }

    /// Remove node `idx` from the cluster: its Node object goes, its daemon stops.
    pub fn remove_node(&mut self, idx: usize) -> SimNode {
        let node = self.nodes.remove(idx);
        self.write_nodes();
        node
    }

    pub fn write_file(&self, name: &str, text: &str) {
        let tmp = self.manifests.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write manifest");
        std::fs::rename(&tmp, self.manifests.path().join(name)).expect("rename manifest");
    }

    /// ADD a pod on node `idx` (namespace `ns`, name `name`).
    pub fn add_pod(&self, idx: usize, ns: &str, name: &str) -> Pod {
        let node = &self.nodes[idx];
        cni::add_pod_with(
            &node.ns,
            &node.daemon().conf("1.0.0"),
            &format!("{name}{idx}"),
            |c| {
                c.with_args(&format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name}"
                ))
            },
        )
    }

    /// Publish Pod objects (labels, addresses) for `pods`.
    pub fn write_pods(&self, file: &str, pods: &[PodObject<'_>]) {
        let mut y = String::new();
        for PodObject {
            ns,
            name,
            labels,
            pod,
        } in pods
        {
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k:?}: {v:?}")).collect();
            let ips: Vec<String> = pod_ips(pod)
                .iter()
                .map(|ip| format!("{{ip: {:?}}}", ip.to_string()))
                .collect();
            let _ = write!(
                y,
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{{}}}}}\nspec: {{containers: [{{name: c, image: none}}]}}\nstatus: {{podIPs: [{}]}}\n",
                l.join(", "),
                ips.join(", ")
            );
        }
        self.write_file(file, &y);
    }

    /// Wait until every running daemon applied a newer revision than the one given per node.
    pub fn revisions(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|n| {
                n.daemon
                    .as_ref()
                    .map(|d| {
                        d.call::<sluice_api::Status>(&sluice_api::Request::Status)
                            .policy_revision
                    })
                    .unwrap_or(0)
            })
            .collect()
    }

    pub fn wait_applied(&self, before: &[u64]) {
        let start = std::time::Instant::now();
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(d) = &n.daemon else { continue };
            let want = before.get(i).copied().unwrap_or(0);
            loop {
                let s: sluice_api::Status = d.call(&sluice_api::Request::Status);
                if s.policy_revision > want {
                    break;
                }
                assert!(
                    start.elapsed().as_secs() < 10,
                    "{} did not apply the change",
                    n.name
                );
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

/// Every address of a pod (from its ADD result).
pub fn pod_ips(p: &Pod) -> Vec<IpAddr> {
    p.result["ips"]
        .as_array()
        .expect("ips")
        .iter()
        .filter_map(|i| i["address"].as_str()?.split('/').next()?.parse().ok())
        .collect()
}

/// What a test publishes about one pod as a Pod object in the shared manifests dir.
pub struct PodObject<'a> {
    pub ns: &'a str,
    pub name: &'a str,
    pub labels: &'a [(&'a str, &'a str)],
    pub pod: &'a Pod,
}
