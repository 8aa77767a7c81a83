//! Typed handles on the pinned maps and the operations the daemon performs on them.

use std::{collections::BTreeMap, net::IpAddr, sync::Mutex};

use aya::maps::{
    Array, HashMap, MapData, MapError, PerCpuArray, RingBuf,
    lpm_trie::{Key, LpmTrie},
};
use sluice_common::{
    conntrack::{CtEntry, CtKey},
    endpoint::{DatapathConfig, IpInfo, LocalEndpoint, RemoteNode},
    event::drop_reason,
    ip::{IpAddr128, IpPrefixData},
    maps as names,
    policy::{PolicyKeyData, PolicyValue},
    stats::{EndpointStats, global},
};

use super::{DatapathError, take_map};

/// Map capacities chosen at creation (flags of `sluiced`). Pinned maps keep the size they were
/// created with; a new size applies after `--reset-datapath`.
#[derive(Clone, Copy, Debug)]
pub struct MapSizes {
    pub endpoints: u32,
    pub ipcache: u32,
    pub policy: u32,
    pub conntrack: u32,
    pub nodes: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        Self {
            endpoints: names::DEFAULT_MAX_ENDPOINTS,
            ipcache: names::DEFAULT_IPCACHE,
            policy: names::DEFAULT_POLICY,
            conntrack: names::DEFAULT_CT,
            nodes: names::DEFAULT_NODES,
        }
    }
}

impl MapSizes {
    pub(super) fn apply(&self, loader: &mut aya::EbpfLoader<'_>) {
        loader
            .map_max_entries(names::IFACES, self.endpoints)
            .map_max_entries(names::EP_STATS, self.endpoints)
            .map_max_entries(names::ENDPOINTS, self.endpoints * 2)
            .map_max_entries(names::IPCACHE, self.ipcache)
            .map_max_entries(names::POLICY, self.policy)
            .map_max_entries(names::CT, self.conntrack)
            .map_max_entries(names::NODES, self.nodes);
    }
}

/// Convert an address to the maps' 16-byte form (IPv4 mapped).
pub fn ip128(ip: IpAddr) -> IpAddr128 {
    let v6 = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    let o = v6.octets();
    let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
    IpAddr128 {
        words: [w(0), w(4), w(8), w(12)],
    }
}

/// The inverse of `ip128`.
pub fn ip_from128(a: &IpAddr128) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(a.to_bytes());
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// An LPM key for a prefix (IPv4 prefixes live under ::ffff:0:0/96).
pub fn prefix_key(net: ipnetwork::IpNetwork) -> Key<IpPrefixData> {
    let len = match net {
        ipnetwork::IpNetwork::V4(n) => 96 + n.prefix() as u32,
        ipnetwork::IpNetwork::V6(n) => n.prefix() as u32,
    };
    Key::new(
        len,
        IpPrefixData {
            bytes: ip128(net.network()).to_bytes(),
        },
    )
}

pub struct DatapathMaps {
    endpoints: Mutex<HashMap<MapData, IpAddr128, LocalEndpoint>>,
    ifaces: Mutex<HashMap<MapData, u32, LocalEndpoint>>,
    ipcache: Mutex<LpmTrie<MapData, IpPrefixData, IpInfo>>,
    nodes: Mutex<LpmTrie<MapData, IpPrefixData, RemoteNode>>,
    policy: Mutex<LpmTrie<MapData, PolicyKeyData, PolicyValue>>,
    ct: Mutex<HashMap<MapData, CtKey, CtEntry>>,
    ep_stats: Mutex<PerCpuArray<MapData, EndpointStats>>,
    global: Mutex<PerCpuArray<MapData, u64>>,
    config: Mutex<Array<MapData, DatapathConfig>>,
    events: Mutex<Option<RingBuf<MapData>>>,
    pub sizes: MapSizes,
    /// Live conntrack entries at the last garbage collection.
    pub ct_live: std::sync::atomic::AtomicU64,
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}

fn not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound | MapError::ElementNotFound => true,
        MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

macro_rules! typed {
    ($ebpf:expr, $name:expr) => {
        take_map($ebpf, $name)?.try_into().map_err(map_err($name))?
    };
}

impl DatapathMaps {
    pub(super) fn take(ebpf: &mut aya::Ebpf, pins: &super::Pins) -> Result<Self, DatapathError> {
        // The sizes the maps really have (pinned maps keep the size they were created with).
        let max = |name: &'static str| {
            aya::maps::MapInfo::from_pin(pins.map(name))
                .map(|i| i.max_entries())
                .map_err(map_err(name))
        };
        let sizes = MapSizes {
            endpoints: max(names::IFACES)?,
            ipcache: max(names::IPCACHE)?,
            policy: max(names::POLICY)?,
            conntrack: max(names::CT)?,
            nodes: max(names::NODES)?,
        };
        Ok(Self {
            endpoints: Mutex::new(typed!(ebpf, names::ENDPOINTS)),
            ifaces: Mutex::new(typed!(ebpf, names::IFACES)),
            ipcache: Mutex::new(typed!(ebpf, names::IPCACHE)),
            nodes: Mutex::new(typed!(ebpf, names::NODES)),
            policy: Mutex::new(typed!(ebpf, names::POLICY)),
            ct: Mutex::new(typed!(ebpf, names::CT)),
            ep_stats: Mutex::new(typed!(ebpf, names::EP_STATS)),
            global: Mutex::new(typed!(ebpf, names::GLOBAL_STATS)),
            config: Mutex::new(typed!(ebpf, names::CONFIG)),
            events: Mutex::new(Some(typed!(ebpf, names::EVENTS))),
            sizes,
            ct_live: Default::default(),
        })
    }

    /// Write a local endpoint under its ifindex and each of its addresses (one record per
    /// address: the identity may differ per family). The address entries go last: until they
    /// exist no other pod's program redirects to this one.
    pub fn put_endpoint(&self, per_ip: &[(IpAddr, LocalEndpoint)]) -> Result<(), DatapathError> {
        let Some((_, first)) = per_ip.first() else {
            return Ok(());
        };
        self.ifaces
            .lock()
            .expect("map lock")
            .insert(first.ifindex, first, 0)
            .map_err(map_err(names::IFACES))?;
        let mut m = self.endpoints.lock().expect("map lock");
        for (ip, ep) in per_ip {
            m.insert(ip128(*ip), ep, 0).map_err(map_err(names::ENDPOINTS))?;
        }
        Ok(())
    }

    /// Remove a local endpoint (absent entries are fine).
    pub fn remove_endpoint(&self, ifindex: u32, ips: &[IpAddr]) -> Result<(), DatapathError> {
        {
            let mut m = self.endpoints.lock().expect("map lock");
            for ip in ips {
                if let Err(e) = m.remove(&ip128(*ip))
                    && !not_found(&e)
                {
                    return Err(map_err(names::ENDPOINTS)(e));
                }
            }
        }
        if let Err(e) = self.ifaces.lock().expect("map lock").remove(&ifindex)
            && !not_found(&e)
        {
            return Err(map_err(names::IFACES)(e));
        }
        Ok(())
    }

    pub fn endpoint_by_ifindex(&self, ifindex: u32) -> Option<LocalEndpoint> {
        self.ifaces.lock().expect("map lock").get(&ifindex, 0).ok()
    }

    pub fn endpoint_by_ip(&self, ip: IpAddr) -> Option<LocalEndpoint> {
        self.endpoints.lock().expect("map lock").get(&ip128(ip), 0).ok()
    }

    /// Every (ifindex, endpoint) in the datapath.
    pub fn all_ifaces(&self) -> Vec<(u32, LocalEndpoint)> {
        let m = self.ifaces.lock().expect("map lock");
        m.iter().filter_map(Result::ok).collect()
    }

    /// Every (address, endpoint) in the datapath.
    pub fn all_endpoint_addrs(&self) -> Vec<(IpAddr, LocalEndpoint)> {
        let m = self.endpoints.lock().expect("map lock");
        m.iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (ip_from128(&k), v))
            .collect()
    }

    /// Zero an endpoint slot's counters (a new endpoint must not inherit its predecessor's).
    pub fn reset_stats(&self, ep_id: u32) -> Result<(), DatapathError> {
        let mut m = self.ep_stats.lock().expect("map lock");
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| map_err(names::EP_STATS)(MapError::IoError(e)))?;
        let zero = aya::maps::PerCpuValues::try_from(vec![EndpointStats::default(); cpus])
            .map_err(|e| map_err(names::EP_STATS)(MapError::IoError(e)))?;
        m.set(ep_id, zero, 0).map_err(map_err(names::EP_STATS))
    }

    /// An endpoint's counters summed over CPUs.
    pub fn stats(&self, ep_id: u32) -> EndpointStats {
        let m = self.ep_stats.lock().expect("map lock");
        let mut sum = EndpointStats::default();
        if let Ok(values) = m.get(&ep_id, 0) {
            for v in values.iter() {
                sum.tx_packets += v.tx_packets;
                sum.tx_bytes += v.tx_bytes;
                sum.rx_packets += v.rx_packets;
                sum.rx_bytes += v.rx_bytes;
                sum.tx_redirected += v.tx_redirected;
                sum.neigh_replies += v.neigh_replies;
                for (i, d) in v.drops.iter().enumerate() {
                    sum.drops[i] += d;
                }
            }
        }
        sum
    }

    /// Datapath-wide counters by name, summed over CPUs.
    pub fn global_counters(&self) -> BTreeMap<String, u64> {
        let m = self.global.lock().expect("map lock");
        (0..global::COUNT)
            .map(|i| {
                let v = m.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0);
                (global::NAMES[i as usize].to_owned(), v)
            })
            .collect()
    }

    pub fn config(&self) -> DatapathConfig {
        self.config
            .lock()
            .expect("map lock")
            .get(&0, 0)
            .unwrap_or_default()
    }

    pub fn set_config(&self, cfg: &DatapathConfig) -> Result<(), DatapathError> {
        self.config
            .lock()
            .expect("map lock")
            .set(0, cfg, 0)
            .map_err(map_err(names::CONFIG))
    }

    /// Change the config under the map lock (read-modify-write).
    pub fn update_config(&self, f: impl FnOnce(&mut DatapathConfig)) -> Result<(), DatapathError> {
        let mut m = self.config.lock().expect("map lock");
        let mut cfg = m.get(&0, 0).unwrap_or_default();
        f(&mut cfg);
        m.set(0, cfg, 0).map_err(map_err(names::CONFIG))
    }

    pub fn take_events(&self) -> Option<RingBuf<MapData>> {
        self.events.lock().expect("map lock").take()
    }

    // ---- policy and identities -------------------------------------------------------

    pub fn policy_insert(&self, key: &Key<PolicyKeyData>, v: &PolicyValue) -> Result<(), DatapathError> {
        self.policy
            .lock()
            .expect("map lock")
            .insert(key, v, 0)
            .map_err(map_err(names::POLICY))
    }

    pub fn policy_remove(&self, key: &Key<PolicyKeyData>) -> Result<(), DatapathError> {
        match self.policy.lock().expect("map lock").remove(key) {
            Err(e) if !not_found(&e) => Err(map_err(names::POLICY)(e)),
            _ => Ok(()),
        }
    }

    pub fn policy_entries(&self) -> Vec<(Key<PolicyKeyData>, PolicyValue)> {
        let m = self.policy.lock().expect("map lock");
        m.iter().filter_map(Result::ok).collect()
    }

    pub fn ipcache_insert(&self, key: &Key<IpPrefixData>, v: &IpInfo) -> Result<(), DatapathError> {
        self.ipcache
            .lock()
            .expect("map lock")
            .insert(key, v, 0)
            .map_err(map_err(names::IPCACHE))
    }

    pub fn ipcache_remove(&self, key: &Key<IpPrefixData>) -> Result<(), DatapathError> {
        match self.ipcache.lock().expect("map lock").remove(key) {
            Err(e) if !not_found(&e) => Err(map_err(names::IPCACHE)(e)),
            _ => Ok(()),
        }
    }

    pub fn ipcache_entries(&self) -> Vec<(Key<IpPrefixData>, IpInfo)> {
        let m = self.ipcache.lock().expect("map lock");
        m.iter().filter_map(Result::ok).collect()
    }

    // ---- remote nodes ----------------------------------------------------------------

    pub fn node_insert(&self, key: &Key<IpPrefixData>, v: &RemoteNode) -> Result<(), DatapathError> {
        self.nodes
            .lock()
            .expect("map lock")
            .insert(key, v, 0)
            .map_err(map_err(names::NODES))
    }

    pub fn node_remove(&self, key: &Key<IpPrefixData>) -> Result<(), DatapathError> {
        match self.nodes.lock().expect("map lock").remove(key) {
            Err(e) if !not_found(&e) => Err(map_err(names::NODES)(e)),
            _ => Ok(()),
        }
    }

    pub fn node_entries(&self) -> Vec<(Key<IpPrefixData>, RemoteNode)> {
        let m = self.nodes.lock().expect("map lock");
        m.iter().filter_map(Result::ok).collect()
    }

    /// Rewrite the identity (per address) and isolation flags of a local endpoint that is in
    /// the maps; endpoints not (yet) in the maps are skipped. Returns whether anything changed.
    pub fn update_endpoint_policy(
        &self,
        ifindex: u32,
        identities: &[(IpAddr, u32)],
        isolation: u32,
    ) -> Result<bool, DatapathError> {
        use sluice_common::endpoint::{EP_F_EGRESS_ISOLATED, EP_F_INGRESS_ISOLATED};
        let mask = EP_F_INGRESS_ISOLATED | EP_F_EGRESS_ISOLATED;
        let mut changed = false;
        {
            let mut m = self.ifaces.lock().expect("map lock");
            if let Ok(mut ep) = m.get(&ifindex, 0) {
                let flags = (ep.flags & !mask) | isolation;
                let identity = identities.first().map(|(_, i)| *i).unwrap_or(ep.identity);
                if ep.flags != flags || ep.identity != identity {
                    ep.flags = flags;
                    ep.identity = identity;
                    m.insert(ifindex, ep, 0).map_err(map_err(names::IFACES))?;
                    changed = true;
                }
            }
        }
        let mut m = self.endpoints.lock().expect("map lock");
        for (ip, identity) in identities {
            let key = ip128(*ip);
            if let Ok(mut ep) = m.get(&key, 0) {
                if ep.ifindex != ifindex {
                    continue;
                }
                let flags = (ep.flags & !mask) | isolation;
                if ep.flags != flags || ep.identity != *identity {
                    ep.flags = flags;
                    ep.identity = *identity;
                    m.insert(key, ep, 0).map_err(map_err(names::ENDPOINTS))?;
                    changed = true;
                }
            }
        }
        Ok(changed)
    }

    // ---- conntrack -------------------------------------------------------------------

    /// Delete conntrack entries that expired before `now_s` (CLOCK_MONOTONIC seconds), and
    /// those `also` selects. Returns (live entries left, entries removed).
    pub fn ct_sweep(&self, now_s: u32, also: impl Fn(&CtKey) -> bool) -> (u64, u64) {
        let mut m = self.ct.lock().expect("map lock");
        let mut dead = Vec::new();
        let mut live = 0u64;
        for (k, v) in m.iter().filter_map(Result::ok) {
            if v.expires <= now_s || also(&k) {
                dead.push(k);
            } else {
                live += 1;
            }
        }
        let mut removed = 0;
        for k in &dead {
            if m.remove(k).is_ok() {
                removed += 1;
            }
        }
        (live, removed)
    }

    /// Entries per map, with capacities (walks the maps: for status, not for hot paths).
    pub fn fill(&self) -> Vec<(&'static str, u64, u64)> {
        let count = |n: usize| n as u64;
        vec![
            (
                names::ENDPOINTS,
                count(self.endpoints.lock().expect("map lock").keys().count()),
                self.sizes.endpoints as u64 * 2,
            ),
            (
                names::IFACES,
                count(self.ifaces.lock().expect("map lock").keys().count()),
                self.sizes.endpoints as u64,
            ),
            (
                names::IPCACHE,
                count(self.ipcache.lock().expect("map lock").keys().count()),
                self.sizes.ipcache as u64,
            ),
            (
                names::POLICY,
                count(self.policy.lock().expect("map lock").keys().count()),
                self.sizes.policy as u64,
            ),
            // Walking a big conntrack table per status call would cost hundreds of thousands
            // of syscalls: the garbage collector's last count is reported instead.
            (
                names::CT,
                self.ct_live.load(std::sync::atomic::Ordering::Relaxed),
                self.sizes.conntrack as u64,
            ),
            (
                names::NODES,
                count(self.nodes.lock().expect("map lock").keys().count()),
                self.sizes.nodes as u64,
            ),
        ]
    }
}

/// Drop reason names with their counts (non-zero only).
pub fn drops_by_name(s: &EndpointStats) -> BTreeMap<String, u64> {
    s.drops
        .iter()
        .enumerate()
        .filter(|(i, n)| *i > 0 && **n > 0)
        .map(|(i, n)| (drop_reason::NAMES[i].to_owned(), *n))
        .collect()
}
