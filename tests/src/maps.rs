//! Reading the daemon's pinned maps directly: the ground truth of what the datapath holds.

use std::{net::IpAddr, path::Path};

use aya::maps::{HashMap, Map, MapData};
use sluice_common::{endpoint::LocalEndpoint, ip::IpAddr128};

fn open_hash<K: aya::Pod, V: aya::Pod>(pins: &Path, name: &str) -> HashMap<MapData, K, V> {
    let data = MapData::from_pin(pins.join("maps").join(name)).expect("open pinned map");
    HashMap::try_from(Map::HashMap(data)).expect("hash map")
}

/// ifindexes in SL_IFACES.
pub fn iface_entries(pins: &Path) -> Vec<u32> {
    let m: HashMap<MapData, u32, LocalEndpoint> = open_hash(pins, sluice_common::maps::IFACES);
    m.keys().filter_map(Result::ok).collect()
}

/// Addresses in SL_ENDPOINTS.
pub fn endpoint_addresses(pins: &Path) -> Vec<IpAddr> {
    let m: HashMap<MapData, IpAddr128, LocalEndpoint> = open_hash(pins, sluice_common::maps::ENDPOINTS);
    m.keys()
        .filter_map(Result::ok)
        .map(|k| {
            let v6 = std::net::Ipv6Addr::from(k.to_bytes());
            v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6))
        })
        .collect()
}
