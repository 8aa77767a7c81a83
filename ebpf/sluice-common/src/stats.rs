//! Counters kept by the datapath (per-CPU maps; readers sum the CPUs).

use crate::event::drop_reason;

/// Value of `SL_EP_STATS` (a per-CPU array indexed by `ep_id`).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct EndpointStats {
    /// Packets/bytes sent by the pod (seen by `from_pod`).
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Packets/bytes delivered to the pod (by `from_pod` of a local peer via redirect_peer, or by `to_pod`).
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Packets of this pod handed straight to a local pod with `bpf_redirect_peer`.
    pub tx_redirected: u64,
    /// ARP requests and IPv6 neighbour solicitations answered for the pod.
    pub neigh_replies: u64,
    /// Drops attributed to this endpoint, by `drop_reason`.
    pub drops: [u64; drop_reason::COUNT],
}

/// Indexes of the per-CPU `SL_GLOBAL_STATS` array.
pub mod global {
    pub const FROM_POD_RUNS: u32 = 0;
    pub const TO_POD_RUNS: u32 = 1;
    pub const CT_CREATED: u32 = 2;
    pub const CT_INSERT_FAILED: u32 = 3;
    pub const POLICY_LOOKUPS: u32 = 4;
    pub const EVENTS_LOST: u32 = 5;
    pub const TO_HOST: u32 = 6;
    pub const TO_REMOTE: u32 = 7;
    /// Packets from other nodes that `from_uplink` handed straight into a local pod.
    pub const FROM_UPLINK_TO_POD: u32 = 8;
    pub const COUNT: u32 = 9;
    pub const NAMES: [&str; COUNT as usize] = [
        "from_pod_runs",
        "to_pod_runs",
        "ct_created",
        "ct_insert_failed",
        "policy_lookups",
        "events_lost",
        "to_host",
        "to_remote",
        "from_uplink_to_pod",
    ];
}
