//! Events the datapath sends to `sluiced` through the `SL_EVENTS` ring buffer.

use crate::ip::IpAddr128;

/// One verdict on one packet: a drop (always reported) or an allowed new flow (reported while
/// `CFG_F_VERDICT_EVENTS` is set).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct FlowEvent {
    /// `bpf_ktime_get_ns()` when the packet was seen.
    pub ts_ns: u64,
    pub src: IpAddr128,
    pub dst: IpAddr128,
    /// Ports in host byte order (0 when the protocol has none).
    pub sport: u16,
    pub dport: u16,
    /// IP protocol number; 0 for non-IP (ARP).
    pub proto: u8,
    /// `direction::*` relative to the endpoint `ep_id`.
    pub direction: u8,
    /// `VERDICT_*`.
    pub verdict: u8,
    /// `drop_reason::*` for drops, 0 for allows.
    pub reason: u8,
    /// Endpoint whose policy or checks produced the verdict (`u32::MAX`: none).
    pub ep_id: u32,
    /// ifindex the program ran on.
    pub ifindex: u32,
    pub src_identity: u32,
    pub dst_identity: u32,
    /// `PolicyValue::policy_ref` of the entry that allowed (allows only), else `u32::MAX`.
    pub policy_ref: u32,
    pub _pad: u32,
}

pub const VERDICT_DROP: u8 = 1;
pub const VERDICT_ALLOW: u8 = 2;

/// Why a packet was dropped. Also the index into `EndpointStats::drops`.
pub mod drop_reason {
    /// No NetworkPolicy allows the flow out of the source pod.
    pub const POLICY_EGRESS: u8 = 1;
    /// No NetworkPolicy allows the flow into the destination pod.
    pub const POLICY_INGRESS: u8 = 2;
    /// Source IP is not the pod's.
    pub const SPOOFED_IP: u8 = 3;
    /// Source MAC is not the pod's.
    pub const SPOOFED_MAC: u8 = 4;
    /// The conntrack table is full and the flow needs state (an isolated endpoint).
    pub const CT_FULL: u8 = 5;
    /// Malformed or impossible packet (truncated header, SYN+FIN, ...).
    pub const CT_INVALID: u8 = 6;
    /// A non-first IP fragment towards or from an isolated pod (no ports to check).
    pub const FRAGMENT: u8 = 7;
    /// The program could not forward (redirect or tunnel helper failed).
    pub const FORWARD_FAILED: u8 = 8;
    /// No route to a remote pod CIDR in overlay mode.
    pub const NO_TUNNEL: u8 = 9;
    /// Number of reasons + 1 (index 0 unused).
    pub const COUNT: usize = 10;

    /// Stable names, used by the daemon's metrics and `sluicectl`.
    pub const NAMES: [&str; COUNT] = [
        "none",
        "policy_egress",
        "policy_ingress",
        "spoofed_ip",
        "spoofed_mac",
        "ct_full",
        "ct_invalid",
        "fragment",
        "forward_failed",
        "no_tunnel",
    ];
}
