//! Map names (as the eBPF object defines them: the `#[map]` statics' names) and default sizes.
//! Names stay within the kernel's 15-character object-name limit.

pub const ENDPOINTS: &str = "SL_ENDPOINTS";
pub const IFACES: &str = "SL_IFACES";
pub const IPCACHE: &str = "SL_IPCACHE";
pub const NODES: &str = "SL_NODES";
pub const POLICY: &str = "SL_POLICY";
pub const CT: &str = "SL_CT";
pub const EP_STATS: &str = "SL_EP_STATS";
pub const GLOBAL_STATS: &str = "SL_GLOBAL_STAT";
pub const CONFIG: &str = "SL_CONFIG";
pub const EVENTS: &str = "SL_EVENTS";

/// Every map the daemon pins and re-adopts across restarts.
pub const PINNED: [&str; 10] = [
    ENDPOINTS,
    IFACES,
    IPCACHE,
    NODES,
    POLICY,
    CT,
    EP_STATS,
    GLOBAL_STATS,
    CONFIG,
    EVENTS,
];

/// Default capacities, sized for 1,000 pods and 10,000 policy rules per node. The daemon can
/// override the sizable ones at map creation (`sluiced --max-endpoints`, ...).
pub const DEFAULT_MAX_ENDPOINTS: u32 = 1024;
/// Two addresses (v4 + v6) per endpoint.
pub const DEFAULT_ENDPOINT_ADDRS: u32 = 2 * DEFAULT_MAX_ENDPOINTS;
pub const DEFAULT_IPCACHE: u32 = 65_536;
pub const DEFAULT_NODES: u32 = 4_096;
pub const DEFAULT_POLICY: u32 = 262_144;
pub const DEFAULT_CT: u32 = 262_144;
/// Ring buffer for flow events: ~3,500 events; when a flood overruns it, events are counted
/// as lost (the drop counters themselves are exact).
pub const EVENTS_BYTES: u32 = 256 << 10;
