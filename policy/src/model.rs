//! What a node knows of the cluster, in the shape policy needs.

use std::{collections::BTreeMap, net::IpAddr};

pub use k8s_openapi::api::networking::v1::NetworkPolicy;

pub type Labels = BTreeMap<String, String>;

/// The label every namespace carries (set by the API server since Kubernetes 1.21).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Transport protocols NetworkPolicy can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            132 => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// From the API's spelling (`TCP`, `UDP`, `SCTP`); absent means TCP.
    pub fn from_api(s: Option<&str>) -> Option<Self> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

/// A container port of a pod (named ports are resolved against these).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
}

/// A pod, as policy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    /// `status.podIPs` (or the addresses sluice leased it).
    pub ips: Vec<IpAddr>,
    pub ports: Vec<ContainerPort>,
    /// hostNetwork pods use their node's addresses: only ipBlock peers can match them, and
    /// policies never isolate them.
    pub host_network: bool,
}

/// Everything policy decisions depend on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterState {
    /// Namespace name → labels. A namespace that has pods but no entry here behaves as one
    /// whose only label is `kubernetes.io/metadata.name`.
    pub namespaces: BTreeMap<String, Labels>,
    /// (namespace, name) → pod.
    pub pods: BTreeMap<(String, String), PodInfo>,
    /// (namespace, name) → policy. Shared (`Arc`): sources, snapshots and the compiler hold
    /// the same objects, not copies (10,000 policies are tens of megabytes each time).
    pub policies: BTreeMap<(String, String), std::sync::Arc<NetworkPolicy>>,
}

impl ClusterState {
    /// A namespace's labels, with `kubernetes.io/metadata.name` always present.
    pub fn namespace_labels(&self, ns: &str) -> Labels {
        let mut l = self.namespaces.get(ns).cloned().unwrap_or_default();
        l.entry(NAMESPACE_NAME_LABEL.to_owned())
            .or_insert_with(|| ns.to_owned());
        l
    }

    /// The (non-hostNetwork) pod that owns an address.
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<&PodInfo> {
        self.pods
            .values()
            .find(|p| !p.host_network && p.ips.contains(&ip))
    }
}
