//! Request and reply types.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// What the runtime calls an attachment: one interface of one container. The key of every
/// lease and endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
}

impl std::fmt::Display for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.container_id, self.ifname)
    }
}

/// The Kubernetes pod an attachment belongs to (from `CNI_ARGS` `K8S_POD_NAMESPACE`/`K8S_POD_NAME`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Daemon health and figures.
    Status,
    /// Lease addresses (one per configured family) for an attachment. Idempotent: an
    /// attachment that already holds a lease gets the same addresses back.
    Allocate {
        attachment: Attachment,
        #[serde(default)]
        pod: Option<PodRef>,
        /// Specific addresses asked for (`runtimeConfig.ips`, `CNI_ARGS IP=`).
        #[serde(default)]
        requested: Vec<IpAddr>,
    },
    /// Give an attachment's addresses back. Succeeds when it holds none.
    Release { attachment: Attachment },
    /// Wire the datapath for an attachment whose veth exists: attach the programs to the host
    /// side, write the maps, route the pod's addresses, apply policy. Returns once done.
    Register(Box<RegisterEndpoint>),
    /// Undo `Register`. Succeeds when there is nothing to undo.
    Deregister { attachment: Attachment },
    /// Deregister + release in one step (what a CNI DEL needs; what the pending queue holds).
    Teardown { attachment: Attachment },
    /// Describe an attachment's lease and endpoint (for CNI CHECK).
    Inspect { attachment: Attachment },
    /// Release every lease and endpoint not in `valid` (CNI GC).
    Gc { valid: Vec<Attachment> },
    /// Every endpoint with its counters.
    Endpoints,
    /// Every lease.
    Leases,
    /// Which policies select a pod, what they allow.
    Policy { pod: PodRef },
    /// Stream flow events (drops; allowed new flows too with `verdicts`).
    Monitor {
        #[serde(default)]
        verdicts: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterEndpoint {
    pub attachment: Attachment,
    #[serde(default)]
    pub pod: Option<PodRef>,
    /// Name of the host-side veth.
    pub host_ifname: String,
    /// MAC of the pod-side interface.
    pub pod_mac: String,
    /// The addresses the pod was configured with (as allocated).
    pub ips: Vec<IpAddr>,
    /// The pod's netns path (informational).
    #[serde(default)]
    pub netns: String,
}

/// One address of an allocation, as the pod must be configured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpAssignment {
    pub address: IpAddr,
    /// Prefix length of the pool it came from (for reference; pods get a host route).
    pub pool_prefix_len: u8,
    /// The pod's gateway for this family.
    pub gateway: IpAddr,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub ips: Vec<IpAssignment>,
    /// MTU the pod interface should have (underlay MTU less any tunnel overhead).
    pub mtu: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    pub ep_id: u32,
    pub host_ifindex: u32,
    pub host_mac: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Released {
    pub addresses: Vec<IpAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inspection {
    pub attachment: Attachment,
    pub ips: Vec<IpAddr>,
    pub endpoint: Option<EndpointInfo>,
    /// The datapath maps hold this endpoint and its programs are attached.
    pub datapath_ok: bool,
    /// What is wrong with the datapath, when `datapath_ok` is false.
    #[serde(default)]
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    pub released: Vec<Attachment>,
    pub errors: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointInfo {
    pub attachment: Attachment,
    pub pod: Option<PodRef>,
    pub ep_id: u32,
    pub host_ifname: String,
    pub host_ifindex: u32,
    pub pod_mac: String,
    pub ips: Vec<IpAddr>,
    pub identity: u32,
    pub ingress_isolated: bool,
    pub egress_isolated: bool,
    pub counters: EndpointCounters,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointCounters {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_redirected: u64,
    pub neigh_replies: u64,
    /// Drops by reason name (`policy_ingress`, `spoofed_ip`, ...), non-zero ones only.
    pub drops: std::collections::BTreeMap<String, u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    pub address: IpAddr,
    pub attachment: Attachment,
    pub pod: Option<PodRef>,
    /// Seconds since the Unix epoch.
    pub allocated_at: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    pub cidr: String,
    pub gateway: IpAddr,
    pub used: u64,
    /// Free addresses (saturates at u64::MAX for huge IPv6 pools).
    pub free: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapFill {
    pub name: String,
    pub entries: u64,
    pub capacity: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub ready: bool,
    pub node_name: String,
    pub routing: String,
    pub pools: Vec<PoolStatus>,
    pub endpoints: u64,
    pub kernel: String,
    /// Kernel features detected at start (`tcx`, `bpf_redirect_peer`, `btf`, ...).
    pub features: Vec<String>,
    /// How the programs are attached: `tcx` or `clsact`.
    pub attach_mode: String,
    /// Endpoints still on their first (clsact) attachment, waiting to move to tcx.
    #[serde(default)]
    pub clsact_endpoints: u64,
    pub maps: Vec<MapFill>,
    /// Program run counters and other datapath-wide counters.
    pub datapath_counters: std::collections::BTreeMap<String, u64>,
    pub policies: u64,
    pub identities: u64,
    /// Policy updates applied since start (each change of the cluster objects seen).
    #[serde(default)]
    pub policy_revision: u64,
    /// `SL_CONFIG`'s policy generation (bumped when the maps' policy changes).
    #[serde(default)]
    pub policy_generation: u32,
    /// Allow entries in `SL_POLICY`.
    #[serde(default)]
    pub policy_entries: u64,
    pub uptime_s: u64,
}

/// One flow event, as `monitor` streams it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowEventInfo {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// `drop` or `allow`.
    pub verdict: String,
    /// Drop reason name, empty for allows.
    pub reason: String,
    /// `ingress` or `egress`, relative to `pod`.
    pub direction: String,
    /// `namespace/name` (or container id) of the endpoint the verdict is about.
    pub pod: String,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `sctp`, or the number.
    pub proto: String,
    pub src_identity: u32,
    pub dst_identity: u32,
    /// The policy that allowed the flow (allows only).
    #[serde(default)]
    pub policy: String,
}

/// Error kinds the daemon reports; the CNI plugin maps each to a CNI error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request was malformed.
    BadRequest,
    /// No free address left in a pool.
    PoolExhausted,
    /// A requested address is outside the pools or leased to another attachment.
    AddressUnavailable,
    /// The attachment is unknown (no lease, no endpoint).
    UnknownAttachment,
    /// Attaching programs or writing maps failed.
    Datapath,
    /// A netlink operation on the node failed.
    Netlink,
    /// Policy state does not fit the maps.
    PolicyCapacity,
    /// The daemon is starting or stopping.
    NotReady,
    /// Anything else.
    Internal,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

/// One reply line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Ok(serde_json::Value),
    Error(ApiError),
}
