//! What the pod side of an attachment looks like: its addresses (host routes: /32 and /128),
//! and the routes that send everything to the gateway, which the host-side program answers
//! for (no bridge, no shared L2: the pod's only neighbour is its gateway).

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use sluice_api::IpAssignment;

use crate::{
    netlink::{Netlink, NetlinkError},
    spec::result::{IpConfig, Route},
};

pub fn host_prefix(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

pub fn default_dst(ip: &IpAddr) -> IpNetwork {
    if ip.is_ipv4() {
        "0.0.0.0/0".parse().expect("literal")
    } else {
        "::/0".parse().expect("literal")
    }
}

/// Configure addresses and routes on the pod interface `index` (inside the pod's netns).
pub fn configure(nl: &mut Netlink, index: u32, ips: &[IpAssignment]) -> Result<(), NetlinkError> {
    for a in ips {
        nl.add_address(index, a.address, host_prefix(&a.address))?;
    }
    nl.set_up(index)?;
    for a in ips {
        // The gateway is reachable on the link (the host veth answers ARP/ND for it) ...
        nl.add_route(a.gateway, host_prefix(&a.gateway), None, index)?;
        // ... and everything goes through it.
        nl.add_route(default_dst(&a.address).network(), 0, Some(a.gateway), index)?;
    }
    Ok(())
}

/// The result's view of the same configuration.
pub fn result_ips(ips: &[IpAssignment], interface: usize) -> (Vec<IpConfig>, Vec<Route>) {
    let configs = ips
        .iter()
        .map(|a| IpConfig {
            address: IpNetwork::new(a.address, host_prefix(&a.address)).expect("host prefix"),
            gateway: Some(a.gateway),
            interface: Some(interface),
        })
        .collect();
    let routes = ips
        .iter()
        .map(|a| Route {
            dst: default_dst(&a.address),
            gw: Some(a.gateway),
        })
        .collect();
    (configs, routes)
}

/// A random locally administered unicast MAC.
pub fn random_mac() -> [u8; 6] {
    let mut b = [0u8; 6];
    // SAFETY: valid buffer; getrandom blocks only before the pool is initialised at boot.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        // Fall back to time and pid: uniqueness matters, unpredictability does not.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64
            ^ ((std::process::id() as u64) << 32);
        b.copy_from_slice(&t.to_le_bytes()[..6]);
    }
    b[0] = (b[0] & 0xfe) | 0x02;
    b
}

pub fn format_mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}
