//! The pod-to-pod topologies the bench compares, each a client namespace and a server
//! namespace with an address to reach, all on this machine and inside namespaces the bench
//! creates:
//!
//! - `veth`: two namespaces joined by one veth pair (the reference: nothing but the pair);
//! - `loopback`: client and server in one namespace on 127.0.0.1 (the ceiling);
//! - `sluice`: sluiced in a node namespace, two pods wired by the real plugin binary;
//! - `bridge`, `ptp`: containernetworking-plugins' bridge and ptp with host-local IPAM, in a
//!   node namespace of their own.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context, Result};
use serde_json::json;

use super::{
    Bins,
    cni::{Plugin, Pod},
    daemon::Sluiced,
    measure::{self, Servers},
    netns::{self, Netns, TempDir},
};

pub struct Topo {
    pub label: &'static str,
    /// Dropped first: servers stop before their namespaces go.
    servers: Option<Servers>,
    pub client: PathBuf,
    pub server: PathBuf,
    pub server_ip: IpAddr,
    pub client_ip: IpAddr,
    pub pods: Vec<Pod>,
    pub plugin: Option<Plugin>,
    pub daemon: Option<Sluiced>,
    /// The other nodes' daemons (cross-node topologies).
    more_daemons: Vec<Sluiced>,
    /// The node namespace (CNI topologies) or the pair's namespaces.
    pub nss: Vec<Netns>,
    _dirs: Vec<TempDir>,
}

impl Topo {
    fn bare(
        label: &'static str,
        client: PathBuf,
        server: PathBuf,
        client_ip: IpAddr,
        server_ip: IpAddr,
    ) -> Self {
        Self {
            label,
            servers: None,
            client,
            server,
            server_ip,
            client_ip,
            pods: Vec::new(),
            plugin: None,
            daemon: None,
            more_daemons: Vec::new(),
            nss: Vec::new(),
            _dirs: Vec::new(),
        }
    }

    /// The node namespace of a CNI topology.
    pub fn node(&self) -> Result<&Netns> {
        self.nss
            .first()
            .with_context(|| format!("{} has no node namespace", self.label))
    }

    /// A veth pair between two namespaces, 10.250.0.1/24 and .2/24, created inside them.
    pub fn veth() -> Result<Self> {
        Self::pair("veth", ["10.250.0.1", "10.250.0.2"], 24)
    }

    /// A veth pair like `veth`, over IPv6 (fd00:250::1/64 and ::2/64, no DAD).
    pub fn veth6() -> Result<Self> {
        Self::pair("veth6", ["fd00:250::1", "fd00:250::2"], 64)
    }

    /// Two namespaces joined by one veth pair (`eth0` in each) with `addrs` (client, server).
    fn pair(label: &'static str, addrs: [&str; 2], prefix: u8) -> Result<Self> {
        let a = Netns::new(&format!("{label}a"))?;
        let b = Netns::new(&format!("{label}b"))?;
        netns::ip(&[
            "-n", &a.name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &b.name,
        ])?;
        for (ns, addr) in [(&a, addrs[0]), (&b, addrs[1])] {
            let cidr = format!("{addr}/{prefix}");
            let mut args = vec!["-n", &ns.name, "addr", "add", &cidr, "dev", "eth0"];
            if addr.contains(':') {
                // No duplicate address detection: the address is usable at once.
                args.push("nodad");
            }
            netns::ip(&args)?;
            netns::ip(&["-n", &ns.name, "link", "set", "eth0", "up"])?;
        }
        let mut t = Self::bare(label, a.path(), b.path(), addrs[0].parse()?, addrs[1].parse()?);
        t.nss = vec![a, b];
        Ok(t)
    }

    /// Two simulated nodes joined by a direct veth (the underlay), each running sluiced with
    /// `--routing routing`, a client pod on the first and a server pod on the second.
    /// Returns the pods' topology and the reference: the same two node namespaces talking
    /// over the underlay veth itself (it borrows the nodes: drop it first). `n` keeps the
    /// addresses of several clusters apart.
    pub fn cross_node(bins: &Bins, routing: &str, label: &'static str, n: u8) -> Result<(Self, Self)> {
        let nodes = [Netns::new("n1")?, Netns::new("n2")?];
        netns::ip(&[
            "-n",
            &nodes[0].name,
            "link",
            "add",
            "uplink0",
            "type",
            "veth",
            "peer",
            "name",
            "uplink0",
            "netns",
            &nodes[1].name,
        ])?;
        let underlay = |i: usize| format!("192.168.{}.{}", 80 + n, i + 1);
        let cidr = |i: usize| format!("10.{}.{}.0/24", 230 + n, i + 1);
        for (i, ns) in nodes.iter().enumerate() {
            netns::ip(&[
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{}/24", underlay(i)),
                "dev",
                "uplink0",
            ])?;
            netns::ip(&["-n", &ns.name, "link", "set", "uplink0", "up"])?;
        }
        let node_objects: String = (0..2)
            .map(|i| {
                format!(
                    "---\napiVersion: v1\nkind: Node\nmetadata: {{name: node-{i}}}\nspec: {{podCIDRs: [{}]}}\nstatus: {{addresses: [{{type: InternalIP, address: {}}}]}}\n",
                    cidr(i),
                    underlay(i)
                )
            })
            .collect();
        let mut daemons = Vec::new();
        for (i, ns) in nodes.iter().enumerate() {
            let name = format!("node-{i}");
            let d = Sluiced::start_with(
                bins,
                ns,
                &cidr(i),
                true,
                &["--node-name", &name, "--routing", routing],
            )?;
            let rev = d.revision()?;
            d.write_manifest("00-nodes.yaml", &node_objects)?;
            d.wait_applied(rev, Duration::from_secs(30), |_| true)?;
            daemons.push(d);
        }
        let plugins: Vec<Plugin> = daemons
            .iter()
            .zip(&nodes)
            .map(|(d, ns)| {
                Plugin::new(
                    "sluice",
                    bins.get("sluice").expect("checked at start"),
                    &d.conf("slb-x"),
                    ns,
                )
            })
            .collect();
        let reference = Self::bare(
            "underlay",
            nodes[0].path(),
            nodes[1].path(),
            underlay(0).parse()?,
            underlay(1).parse()?,
        );
        let mut t = Self::client_server(label, &plugins[0], &plugins[1])?;
        t.plugin = plugins.into_iter().next();
        let mut daemons = daemons.into_iter();
        t.daemon = daemons.next();
        t.more_daemons = daemons.collect();
        t.nss = nodes.into();
        Ok((t, reference))
    }

    /// One namespace, 127.0.0.1 to 127.0.0.1.
    pub fn loopback() -> Result<Self> {
        let l = Netns::new("lo")?;
        let lo: IpAddr = Ipv4Addr::LOCALHOST.into();
        let mut t = Self::bare("loopback", l.path(), l.path(), lo, lo);
        t.nss = vec![l];
        Ok(t)
    }

    /// A `client` pod ADDed through `on_client` and a `server` pod through `on_server`.
    fn client_server(label: &'static str, on_client: &Plugin, on_server: &Plugin) -> Result<Self> {
        let client = Pod::add(on_client, "client")?;
        let server = Pod::add(on_server, "server")?;
        let mut t = Self::bare(
            label,
            client.ns.path(),
            server.ns.path(),
            client.ip()?,
            server.ip()?,
        );
        t.pods = vec![client, server];
        Ok(t)
    }

    /// Two pods (`client`, `server`) ADDed through `plugin` in `node`.
    fn with_pods(label: &'static str, node: Netns, plugin: Plugin) -> Result<Self> {
        let mut t = Self::client_server(label, &plugin, &plugin)?;
        t.plugin = Some(plugin);
        t.nss = vec![node];
        Ok(t)
    }

    /// sluiced in a node namespace; two pods through the plugin. `manifests`: run sluiced in
    /// manifests mode (the policy topologies write their Namespace/Pod objects first).
    pub fn sluice(bins: &Bins, cidr: &str, manifests: Option<&str>) -> Result<Self> {
        let node = Netns::new("node")?;
        let daemon = Sluiced::start(bins, &node, cidr, manifests.is_some())?;
        if let Some(model) = manifests {
            let rev = daemon.revision()?;
            daemon.write_manifest("00-model.json", model)?;
            daemon.wait_applied(rev, Duration::from_secs(30), |_| true)?;
        }
        let plugin = Plugin::new("sluice", bins.get("sluice")?, &daemon.conf("slb-sluice"), &node);
        // On failure `daemon` is dropped (stopped) here as well.
        let mut t = Self::with_pods("sluice", node, plugin)?;
        t.daemon = Some(daemon);
        Ok(t)
    }

    /// containernetworking-plugins' `bridge` (`kind == "bridge"`) or `ptp` with host-local,
    /// in a node namespace; host-local keeps its leases in a directory of ours.
    pub fn reference_cni(kind: &'static str, subnet: &str) -> Result<Self> {
        let node = Netns::new("node")?;
        let dir = TempDir::new("hostlocal")?;
        let ipam = json!({
            "type": "host-local",
            "ranges": [[{ "subnet": subnet }]],
            "dataDir": dir.path.display().to_string(),
        });
        let conf = match kind {
            "bridge" => json!({
                "cniVersion": "1.0.0", "name": netns::ifname("br"), "type": "bridge",
                "bridge": netns::ifname("br0"), "isGateway": true, "ipMasq": false, "ipam": ipam,
            }),
            _ => json!({
                "cniVersion": "1.0.0", "name": netns::ifname("ptp"), "type": "ptp",
                "ipMasq": false, "ipam": ipam,
            }),
        };
        let plugin = Plugin::reference(kind, &conf, &node);
        let mut t = Self::with_pods(kind, node, plugin)?;
        t._dirs.push(dir);
        Ok(t)
    }

    /// Start the servers in the server namespace and check the client reaches them.
    pub fn start_servers(&mut self, tools: bool) -> Result<()> {
        // The CRR loop opens tens of thousands of connections: give the client every port
        // (its own namespace's knob), the same in every topology.
        netns::sysctl(&self.client, "net.ipv4.ip_local_port_range", "1024 65535")?;
        self.servers = Some(Servers::start(&self.server, self.server_ip, tools)?);
        let ip = self.server_ip;
        netns::run_in(&self.client, move || {
            TcpStream::connect_timeout(&SocketAddr::new(ip, measure::RR_PORT), Duration::from_secs(3))
                .with_context(|| format!("connecting to {ip}:{}", measure::RR_PORT))?;
            Ok(())
        })
        .with_context(|| format!("{}: the client cannot reach the server", self.label))?;
        measure::tcp_rr(&self.client, ip, Duration::from_millis(50))
            .with_context(|| format!("{}: request/response does not work", self.label))?;
        Ok(())
    }
}
