//! Local endpoints: the pods wired on this node.

use crate::ip::IpAddr128;

/// The pod is isolated for ingress: some NetworkPolicy with `Ingress` in its policyTypes selects it.
pub const EP_F_INGRESS_ISOLATED: u32 = 1 << 0;
/// The pod is isolated for egress.
pub const EP_F_EGRESS_ISOLATED: u32 = 1 << 1;
/// `LocalEndpoint::ipv4` is set.
pub const EP_F_HAS_V4: u32 = 1 << 2;
/// `LocalEndpoint::ipv6` is set.
pub const EP_F_HAS_V6: u32 = 1 << 3;

/// Value of `SL_ENDPOINTS` (key: a pod IP) and `SL_IFACES` (key: host-side ifindex).
///
/// The same record under both keys: the program that sees a packet leave pod A looks A up by
/// the ifindex it runs on (anti-spoofing, A's identity and policy) and the destination B by
/// address (where to redirect, B's identity and policy). The daemon is the only writer and
/// writes every copy.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct LocalEndpoint {
    /// ifindex of the host-side veth; `bpf_redirect_peer` to it lands in the pod.
    pub ifindex: u32,
    /// Endpoint slot: index into `SL_EP_STATS` and first field of policy keys.
    pub ep_id: u32,
    /// Security identity (see `policy`): what selectors and ipBlocks see of this pod.
    pub identity: u32,
    /// `EP_F_*`.
    pub flags: u32,
    /// MAC of the pod's interface (anti-spoofing; destination MAC when delivering to it).
    pub pod_mac: [u8; 6],
    /// MAC of the host-side veth: the pod's gateway MAC (source MAC when delivering to it).
    pub host_mac: [u8; 6],
    /// The pod's IPv4 address, raw wire word (valid with `EP_F_HAS_V4`).
    pub ipv4: u32,
    /// The pod's IPv6 address (valid with `EP_F_HAS_V6`).
    pub ipv6: IpAddr128,
}

/// Value of `SL_NODES` (key: a remote node's pod CIDR): where pods of that CIDR live.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct RemoteNode {
    /// The node's underlay address (tunnel destination), IPv4-mapped or IPv6.
    pub node_ip: IpAddr128,
    /// `NODE_F_*`.
    pub flags: u32,
    /// The node's VXLAN device MAC: the inner destination of frames tunnelled to it.
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// `RemoteNode::node_ip` is IPv4 (tunnel over IPv4).
pub const NODE_F_UNDERLAY_V4: u32 = 1 << 0;

/// Value of `SL_IPCACHE` (key: an address prefix): the security identity of addresses that
/// are not local endpoints (remote pods, the node itself, ipBlock regions).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct IpInfo {
    pub identity: u32,
    /// `IPINFO_F_*`.
    pub flags: u32,
}

/// The address is one of this node's own (its gateway addresses): ingress from it is always
/// allowed, whatever the policy (kubelet probes).
pub const IPINFO_F_HOST: u32 = 1 << 0;

/// Value of the single-entry `SL_CONFIG` array: datapath-wide settings.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct DatapathConfig {
    /// `CFG_F_*`.
    pub flags: u32,
    /// Bumped by the daemon whenever policy state changes; conntrack entries created under an
    /// older generation are re-checked against policy on their next packet.
    pub policy_gen: u32,
    /// ifindex of the node's VXLAN device (routing mode vxlan).
    pub vxlan_ifindex: u32,
    /// VXLAN network identifier used on the tunnel.
    pub vxlan_vni: u32,
    /// Conntrack lifetimes in seconds.
    pub ct_tcp_syn_s: u32,
    pub ct_tcp_established_s: u32,
    pub ct_tcp_closing_s: u32,
    pub ct_udp_s: u32,
    pub ct_icmp_s: u32,
    pub ct_other_s: u32,
    /// This node's VXLAN device MAC: the inner source of frames it tunnels.
    pub vxlan_mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// Emit a verdict event for every new flow (allowed or not), not only drops. Set while a
/// `sluicectl monitor --verdicts` client is connected.
pub const CFG_F_VERDICT_EVENTS: u32 = 1 << 0;
/// Forward traffic to remote pods through the VXLAN device (else the host stack routes it).
pub const CFG_F_ROUTING_VXLAN: u32 = 1 << 1;
/// Forward traffic to remote pods with `bpf_fib_lookup` + `bpf_redirect_neigh`.
pub const CFG_F_ROUTING_NATIVE: u32 = 1 << 2;
