//! `sluiced` command line. The flags spelled in the issues are a contract: tools outside the
//! project start the daemon with them. Documented in the README.

use std::{path::PathBuf, time::Duration};

use clap::Parser;
use ipnetwork::IpNetwork;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "sluiced",
    version,
    about = "sluice node daemon: IPAM, eBPF datapath, NetworkPolicy"
)]
pub struct Cli {
    /// Pod CIDR of this node; repeat for dual-stack (one IPv4 and one IPv6). Default: this
    /// node's Node object (`spec.podCIDRs`, from the API server or the manifests directory),
    /// else 10.244.1.0/24.
    #[arg(long = "pod-cidr", value_name = "CIDR")]
    pub pod_cidr: Vec<IpNetwork>,

    /// Unix socket of the local API (created mode 0600).
    #[arg(long, value_name = "PATH", default_value = sluice_api::DEFAULT_SOCKET)]
    pub socket: PathBuf,

    /// Directory of the durable state (leases, endpoints).
    #[arg(long = "state-dir", value_name = "DIR", default_value = "/var/lib/sluice")]
    pub state_dir: PathBuf,

    /// bpffs directory where maps, programs and links are pinned (bpffs is mounted if absent).
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/bpf/sluice")]
    pub bpffs: PathBuf,

    /// Name of the dummy device that holds the pods' gateway addresses.
    #[arg(long = "gateway-device", value_name = "NAME", default_value = "sluice0")]
    pub gateway_device: String,

    /// MTU of pod interfaces (default: 1500, less tunnel overhead in overlay mode).
    #[arg(long, value_name = "BYTES")]
    pub mtu: Option<u32>,

    /// Remove every pinned map, program and link first (disruptive: pods lose traffic until
    /// re-registered). Needed after an ABI change or to apply new map sizes.
    #[arg(long = "reset-datapath")]
    pub reset_datapath: bool,

    /// Local endpoints (pods) this node can hold.
    #[arg(long = "max-endpoints", default_value_t = sluice_common::maps::DEFAULT_MAX_ENDPOINTS)]
    pub max_endpoints: u32,

    /// Entries of the policy map (allowed endpoint/peer/port tuples after compilation).
    #[arg(long = "max-policy-entries", default_value_t = sluice_common::maps::DEFAULT_POLICY)]
    pub max_policy_entries: u32,

    /// Entries of the conntrack table.
    #[arg(long = "max-conntrack", default_value_t = sluice_common::maps::DEFAULT_CT)]
    pub max_conntrack: u32,

    /// Entries of the ipcache (remote pods, ipBlock regions).
    #[arg(long = "max-ipcache", default_value_t = sluice_common::maps::DEFAULT_IPCACHE)]
    pub max_ipcache: u32,

    /// Seconds between conntrack garbage collections.
    #[arg(long = "ct-gc-interval", value_name = "SECONDS", default_value_t = 10)]
    pub ct_gc_interval: u64,

    /// Read Namespace, Pod, NetworkPolicy (and Node) objects from the YAML/JSON files of this
    /// directory and follow changes to it (no API server needed).
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,

    /// Kubernetes API mode with this kubeconfig file (its current context). Without it, API
    /// mode uses the in-cluster configuration when KUBERNETES_SERVICE_HOST is set. Not with
    /// --manifests.
    #[arg(long, value_name = "PATH", conflicts_with = "manifests")]
    pub kubeconfig: Option<PathBuf>,

    /// This node's name in the cluster (default: the host name, lowercased, as the kubelet
    /// names its Node).
    #[arg(long = "node-name", env = "NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,

    /// How pods reach pods on other nodes: `native` (routes via the other nodes' addresses;
    /// the underlay must route pod CIDRs) or `vxlan` (an overlay between nodes).
    #[arg(long, value_enum, default_value = "native")]
    pub routing: crate::routing::Mode,

    /// UDP port of the VXLAN overlay.
    #[arg(long = "vxlan-port", default_value_t = 4789)]
    pub vxlan_port: u16,

    /// VXLAN network identifier of the overlay (the same on every node).
    #[arg(long = "vxlan-vni", default_value_t = 1)]
    pub vxlan_vni: u32,

    /// Serve Prometheus metrics (`/metrics`) and health checks (`/healthz`, `/readyz`) on
    /// this address (off by default; use a loopback address on hostNetwork pods).
    #[arg(long = "metrics-address", value_name = "HOST:PORT")]
    pub metrics_address: Option<std::net::SocketAddr>,

    /// Install the CNI plugin and its conflist on the node once the daemon is ready.
    #[arg(long = "install-cni")]
    pub install_cni: bool,

    /// The node's CNI binary directory (where `--install-cni` puts the plugin).
    #[arg(long = "cni-bin-dir", value_name = "DIR", default_value = "/opt/cni/bin")]
    pub cni_bin_dir: PathBuf,

    /// The node's CNI configuration directory (where `--install-cni` writes 05-sluice.conflist).
    #[arg(long = "cni-conf-dir", value_name = "DIR", default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,

    /// The plugin binary to install (default: `sluice` beside this executable).
    #[arg(long = "cni-plugin-binary", value_name = "PATH")]
    pub cni_plugin_binary: Option<PathBuf>,

    /// Remove everything sluice put on the node (conflist, plugin binary, bpffs pins, programs
    /// on pod interfaces, the gateway device, state and socket directories), then exit.
    #[arg(long)]
    pub uninstall: bool,

    /// Log level filter (`info`, `debug`, `sluiced=debug,warn`...); RUST_LOG also works.
    #[arg(long = "log-level", env = "SLUICE_LOG", default_value = "info")]
    pub log_level: String,

    /// Log format: `text` or `json`.
    #[arg(long = "log-format", default_value = "text")]
    pub log_format: String,
}

/// The daemon's configuration after validation.
#[derive(Debug, Clone)]
pub struct Config {
    pub pod_cidrs: Vec<IpNetwork>,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub bpffs: PathBuf,
    pub gateway_device: String,
    pub mtu: Option<u32>,
    pub reset_datapath: bool,
    pub sizes: crate::datapath::MapSizes,
    pub ct_gc_interval: Duration,
    /// An unregistered lease (an ADD that never finished) older than this, whose veth does
    /// not exist, is released at start-up.
    pub stale_lease_after: Duration,
    pub manifests: Option<PathBuf>,
    /// Cluster objects come from the Kubernetes API server (see [`api_mode`]).
    pub api_mode: bool,
    /// `--kubeconfig`; `None` in API mode means the in-cluster configuration.
    pub kubeconfig: Option<PathBuf>,
    pub node_name: String,
    pub metrics_address: Option<std::net::SocketAddr>,
    pub install_cni: bool,
    pub cni_bin_dir: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub cni_plugin_binary: PathBuf,
    pub uninstall: bool,
    pub routing: crate::routing::Mode,
    pub vxlan_port: u16,
    pub vxlan_vni: u32,
}

/// The environment variable the kubelet sets in every pod (the in-cluster API address).
pub const IN_CLUSTER_ENV: &str = "KUBERNETES_SERVICE_HOST";

/// Whether cluster objects come from the API server: not when a manifests directory is
/// given, else when there is a kubeconfig or the daemon runs in a pod. Outside a cluster and
/// without flags there is no policy source (the demo and the tests run that way).
pub fn api_mode(manifests: bool, kubeconfig: bool, in_cluster: bool) -> bool {
    !manifests && (kubeconfig || in_cluster)
}

/// The host name as the kubelet derives its default node name: lowercased.
fn host_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_lowercase())
        .unwrap_or_default()
}

impl Cli {
    pub fn config(&self) -> anyhow::Result<Config> {
        let v4 = self.pod_cidr.iter().filter(|c| c.is_ipv4()).count();
        let v6 = self.pod_cidr.iter().filter(|c| c.is_ipv6()).count();
        anyhow::ensure!(
            v4 <= 1 && v6 <= 1,
            "--pod-cidr: give at most one IPv4 and one IPv6 CIDR (got {:?})",
            self.pod_cidr.iter().map(|c| c.to_string()).collect::<Vec<_>>()
        );
        anyhow::ensure!(self.max_endpoints >= 1, "--max-endpoints must be at least 1");
        anyhow::ensure!(
            self.gateway_device.len() <= 15 && !self.gateway_device.is_empty(),
            "--gateway-device must be 1 to 15 characters"
        );
        if let Some(m) = self.mtu {
            anyhow::ensure!((576..=65535).contains(&m), "--mtu must be between 576 and 65535");
        }
        let api_mode = api_mode(
            self.manifests.is_some(),
            self.kubeconfig.is_some(),
            std::env::var_os(IN_CLUSTER_ENV).is_some_and(|v| !v.is_empty()),
        );
        let node_name = match &self.node_name {
            Some(n) => n.clone(),
            None => host_node_name(),
        };
        anyhow::ensure!(
            !api_mode || !node_name.is_empty(),
            "no node name: give --node-name (or NODE_NAME)"
        );
        Ok(Config {
            pod_cidrs: self.pod_cidr.clone(),
            socket: self.socket.clone(),
            state_dir: self.state_dir.clone(),
            bpffs: self.bpffs.clone(),
            gateway_device: self.gateway_device.clone(),
            mtu: self.mtu,
            reset_datapath: self.reset_datapath,
            sizes: crate::datapath::MapSizes {
                endpoints: self.max_endpoints,
                ipcache: self.max_ipcache,
                policy: self.max_policy_entries,
                conntrack: self.max_conntrack,
                nodes: sluice_common::maps::DEFAULT_NODES,
            },
            ct_gc_interval: Duration::from_secs(self.ct_gc_interval.max(1)),
            stale_lease_after: Duration::from_secs(300),
            manifests: self.manifests.clone(),
            metrics_address: self.metrics_address,
            install_cni: self.install_cni,
            cni_bin_dir: self.cni_bin_dir.clone(),
            cni_conf_dir: self.cni_conf_dir.clone(),
            cni_plugin_binary: match &self.cni_plugin_binary {
                Some(p) => p.clone(),
                None => std::env::current_exe()
                    .ok()
                    .and_then(|e| e.parent().map(|d| d.join("sluice")))
                    .unwrap_or_else(|| PathBuf::from("/usr/bin/sluice")),
            },
            uninstall: self.uninstall,
            routing: self.routing,
            vxlan_port: self.vxlan_port,
            vxlan_vni: self.vxlan_vni,
            api_mode,
            kubeconfig: self.kubeconfig.clone(),
            node_name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_mode_rule() {
        // (manifests, kubeconfig, in-cluster env) → API mode
        assert!(!api_mode(false, false, false));
        assert!(api_mode(false, true, false));
        assert!(api_mode(false, false, true));
        assert!(api_mode(false, true, true));
        assert!(!api_mode(true, false, true));
        assert!(!api_mode(true, false, false));
    }

    #[test]
    fn kube_flags() {
        let cli = Cli::try_parse_from(["sluiced", "--kubeconfig", "/k", "--node-name", "n1"]).unwrap();
        assert_eq!(cli.kubeconfig.as_deref(), Some(std::path::Path::new("/k")));
        let cfg = cli.config().unwrap();
        assert!(cfg.api_mode);
        assert_eq!(cfg.node_name, "n1");
        assert!(Cli::try_parse_from(["sluiced", "--kubeconfig", "/k", "--manifests", "/m"]).is_err());
        let cfg = Cli::try_parse_from(["sluiced", "--manifests", "/m"])
            .unwrap()
            .config()
            .unwrap();
        assert!(!cfg.api_mode);
    }
}
