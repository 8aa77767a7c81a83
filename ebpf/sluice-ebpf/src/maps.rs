//! The maps. Their names are the statics' names, spelled in `sluice_common::maps`; `sluiced`
//! pins every one of them under its bpffs directory and re-adopts them on restart.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, PerCpuArray, RingBuf},
};
use sluice_common::{
    conntrack::{CtEntry, CtKey},
    endpoint::{DatapathConfig, IpInfo, LocalEndpoint, RemoteNode},
    ip::{IpAddr128, IpPrefixData},
    maps as m,
    policy::{PolicyKeyData, PolicyValue},
    stats::{EndpointStats, global},
};

/// Pod address (v4-mapped or v6) -> the local endpoint that owns it.
#[map]
pub static SL_ENDPOINTS: HashMap<IpAddr128, LocalEndpoint> =
    HashMap::with_max_entries(m::DEFAULT_ENDPOINT_ADDRS, 0);

/// Host-side veth ifindex -> the local endpoint behind it.
#[map]
pub static SL_IFACES: HashMap<u32, LocalEndpoint> = HashMap::with_max_entries(m::DEFAULT_MAX_ENDPOINTS, 0);

/// Address prefix -> security identity, for every address that is not a local endpoint.
#[map]
pub static SL_IPCACHE: LpmTrie<IpPrefixData, IpInfo> =
    LpmTrie::with_max_entries(m::DEFAULT_IPCACHE, aya_ebpf::bindings::BPF_F_NO_PREALLOC);

/// Remote pod CIDR -> the node that hosts it.
#[map]
pub static SL_NODES: LpmTrie<IpPrefixData, RemoteNode> =
    LpmTrie::with_max_entries(m::DEFAULT_NODES, aya_ebpf::bindings::BPF_F_NO_PREALLOC);

/// (endpoint, peer identity, direction, protocol, port prefix) -> allow.
#[map]
pub static SL_POLICY: LpmTrie<PolicyKeyData, PolicyValue> =
    LpmTrie::with_max_entries(m::DEFAULT_POLICY, aya_ebpf::bindings::BPF_F_NO_PREALLOC);

/// Connection tracking (a preallocated hash: inserts never allocate on the packet path; when
/// it is full the insert fails and `conntrack::track` decides, see there).
#[map]
pub static SL_CT: HashMap<CtKey, CtEntry> = HashMap::with_max_entries(m::DEFAULT_CT, 0);

/// Per-endpoint counters, indexed by `ep_id`.
#[map]
pub static SL_EP_STATS: PerCpuArray<EndpointStats> =
    PerCpuArray::with_max_entries(m::DEFAULT_MAX_ENDPOINTS, 0);

/// Datapath-wide counters, indexed by `stats::global::*`.
#[map]
pub static SL_GLOBAL_STAT: PerCpuArray<u64> = PerCpuArray::with_max_entries(global::COUNT, 0);

/// Single entry: `DatapathConfig`.
#[map]
pub static SL_CONFIG: Array<DatapathConfig> = Array::with_max_entries(1, 0);

/// Drop and verdict events for `sluiced` (and `sluicectl monitor`).
#[map]
pub static SL_EVENTS: RingBuf = RingBuf::with_byte_size(m::EVENTS_BYTES, 0);

#[inline(always)]
pub fn bump_global(idx: u32) {
    if let Some(p) = SL_GLOBAL_STAT.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub fn ep_stats(ep_id: u32) -> Option<&'static mut EndpointStats> {
    // SAFETY: per-CPU slot, see above.
    SL_EP_STATS.get_ptr_mut(ep_id).map(|p| unsafe { &mut *p })
}

#[inline(always)]
pub fn config() -> Option<&'static DatapathConfig> {
    SL_CONFIG.get(0)
}
