//! Pods on other nodes. sluiced learns the nodes (name, pod CIDRs, InternalIP addresses) from
//! Node objects and keeps the node's routing in line with them:
//!
//! - `--routing native`: the underlay routes pod CIDRs; sluiced adds a route to each other
//!   node's pod CIDR via that node's address. `from_pod` forwards pods' packets to those CIDRs
//!   itself (`bpf_fib_lookup` on those routes, then `bpf_redirect`/`bpf_redirect_neigh` out of
//!   the uplink), skipping the source node's IP stack; the node's own traffic uses the routes.
//! - `--routing vxlan`: one collect-metadata VXLAN device per node. `from_pod` finds the
//!   remote node of a destination in `SL_NODES`, sets the tunnel key and hands the packet to
//!   the device; the node's own traffic takes routes with lightweight-tunnel encapsulation.
//!   Each node's VXLAN device has a MAC derived from its node name (`node_vxlan_mac`), so
//!   every node knows every other's without asking: `from_pod` writes it as the inner
//!   destination, and the node's own routes go via a gateway whose permanent neighbour entry
//!   holds it. (One MAC shared by all nodes would not do: the VXLAN driver drops a frame
//!   whose source MAC is its own device's, which is what the node's own frames would carry.)
//!   Pods get the underlay MTU less the encapsulation (50 bytes over IPv4, 70 over IPv6).

use std::{collections::BTreeMap, net::IpAddr};

use ipnetwork::IpNetwork;
use sluice_common::endpoint::{NODE_F_UNDERLAY_V4, RemoteNode};
use sluice_policy::manifests::NodeInfo;

use crate::{
    datapath::{
        Datapath, DatapathError,
        maps::{DatapathMaps, ip128, prefix_key},
    },
    hostnet::OverlayHop,
    hostnet::{HostNet, HostNetError},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The underlay routes pod CIDRs: routes via the other nodes' addresses.
    Native,
    /// VXLAN overlay between nodes.
    Vxlan,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Native => "native",
            Mode::Vxlan => "vxlan",
        }
    }
}

pub const VXLAN_DEVICE: &str = "sluice-vxlan";

/// The MAC of `node`'s VXLAN device: locally administered `02:5c` and the node name's 32-bit
/// FNV-1a hash. Every node computes the same value for a name, so no MAC has to be
/// published. Two node names in one cluster colliding (odds ~n²/2³³) would make their
/// devices share a MAC: the pair's node-originated overlay traffic would then be dropped.
pub fn node_vxlan_mac(node: &str) -> [u8; 6] {
    let mut h: u32 = 0x811c_9dc5;
    for b in node.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let b = h.to_be_bytes();
    [0x02, 0x5c, b[0], b[1], b[2], b[3]]
}

/// The next hop the node's own routes to a remote pod CIDR name on the VXLAN device: the
/// CIDR's network address, resolved by a permanent neighbour entry to the remote MAC.
fn overlay_gateway(cidr: IpNetwork) -> IpAddr {
    cidr.network()
}

#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error(transparent)]
    HostNet(#[from] HostNetError),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
}

/// One route to another node's pod CIDR, as programmed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Programmed {
    node: String,
    via: IpAddr,
}

/// The overlay's wire parameters (`--vxlan-vni`, `--vxlan-port`).
#[derive(Clone, Copy, Debug)]
pub struct VxlanParams {
    pub vni: u32,
    pub port: u16,
}

pub struct Routing {
    pub mode: Mode,
    node_name: String,
    vni: u32,
    /// The VXLAN device (vxlan mode).
    vxlan_ifindex: Option<u32>,
    /// Remote pod CIDR -> where it is routed.
    routes: BTreeMap<IpNetwork, Programmed>,
    /// The node's own gateway addresses (source of its traffic to remote pods).
    gateways: Vec<IpAddr>,
    /// The uplink carrying `from_uplink` (native routing): the interface holding this node's
    /// InternalIP.
    uplink: Option<u32>,
}

impl Routing {
    /// Native routing: `from_uplink` on the interface holding this node's InternalIP (once the
    /// node's own Node object names it), and on no other. Failures are logged: packets then
    /// take the stack's path, which works, only slower.
    async fn ensure_uplink(
        &mut self,
        nodes: &BTreeMap<String, NodeInfo>,
        hostnet: &HostNet,
        datapath: &Datapath,
    ) {
        let Some(own) = nodes.get(&self.node_name) else {
            return;
        };
        let mut found = None;
        for ip in &own.internal_ips {
            match hostnet.index_of_address(*ip).await {
                Ok(Some(i)) => {
                    found = Some(i);
                    break;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(%ip, error = %crate::node::chain(&e), "finding the uplink"),
            }
        }
        let Some(ifindex) = found else {
            return;
        };
        if self.uplink == Some(ifindex) {
            return;
        }
        let name = match hostnet.links().await {
            Ok(l) => l.into_iter().find(|(i, _)| *i == ifindex).map(|(_, n)| n),
            Err(e) => {
                tracing::warn!(error = %crate::node::chain(&e), "listing interfaces");
                None
            }
        };
        let Some(name) = name else { return };
        let res = datapath
            .detach_uplinks(Some(ifindex))
            .and_then(|()| datapath.attach_uplink(&name, ifindex));
        match res {
            Ok(()) => {
                tracing::info!(uplink = %name, ifindex, "from_uplink attached: packets from other nodes go straight to local pods");
                self.uplink = Some(ifindex);
            }
            Err(e) => {
                tracing::error!(uplink = %name, error = %crate::node::chain(&e), "attaching from_uplink")
            }
        }
    }
}

/// Remote CIDRs a previous run programmed (perhaps in the other mode) are re-established by
/// `sync`.
fn clear_nodes(maps: &DatapathMaps) {
    for (k, _) in maps.node_entries() {
        let _ = maps.node_remove(&k);
    }
}

/// The address to reach `node` at for a pod CIDR of `family` (native: same family; vxlan:
/// the underlay family, any pod family).
fn underlay_address(node: &NodeInfo, pod_v4: bool, mode: Mode, prefer_v4: bool) -> Option<IpAddr> {
    match mode {
        Mode::Native => node.internal_ips.iter().copied().find(|a| a.is_ipv4() == pod_v4),
        Mode::Vxlan => node
            .internal_ips
            .iter()
            .copied()
            .find(|a| a.is_ipv4() == prefer_v4)
            .or_else(|| node.internal_ips.first().copied()),
    }
}

impl Routing {
    /// Prepare the node for `mode`. Returns the routing and the underlay MTU found (the MTU
    /// of the interface holding this node's InternalIP; 1500 when unknown).
    pub async fn setup(
        mode: Mode,
        node_name: &str,
        own: Option<&NodeInfo>,
        hostnet: &HostNet,
        datapath: &Datapath,
        vxlan: VxlanParams,
        gateways: &[IpAddr],
    ) -> Result<(Self, u32), RoutingError> {
        let mut underlay_mtu = None;
        for ip in own.map(|n| n.internal_ips.as_slice()).unwrap_or_default() {
            if let Some(m) = hostnet.mtu_of_address(*ip).await? {
                underlay_mtu = Some(m);
                break;
            }
        }
        let underlay_mtu = underlay_mtu.unwrap_or(1500);
        let maps = &datapath.maps;
        let mut r = Self {
            mode,
            node_name: node_name.to_owned(),
            vni: vxlan.vni,
            vxlan_ifindex: None,
            routes: BTreeMap::new(),
            gateways: gateways.to_vec(),
            uplink: None,
        };
        if mode == Mode::Vxlan {
            let v4_underlay = own.is_none_or(|n| n.internal_ips.iter().any(|a| a.is_ipv4()));
            let overhead = if v4_underlay { 50 } else { 70 };
            let ifindex = hostnet
                .ensure_vxlan(
                    VXLAN_DEVICE,
                    vxlan.port,
                    underlay_mtu - overhead,
                    node_vxlan_mac(node_name),
                )
                .await?;
            r.vxlan_ifindex = Some(ifindex);
            // Overlay packets arrive on the VXLAN device: the uplink program has no work.
            datapath.detach_uplinks(None)?;
            maps.update_config(|c| {
                c.flags |= sluice_common::endpoint::CFG_F_ROUTING_VXLAN;
                c.vxlan_ifindex = ifindex;
                c.vxlan_vni = vxlan.vni;
                c.vxlan_mac = node_vxlan_mac(node_name);
            })?;
            clear_nodes(maps);
            return Ok((r, underlay_mtu - overhead));
        }
        maps.update_config(|c| c.flags &= !sluice_common::endpoint::CFG_F_ROUTING_VXLAN)?;
        clear_nodes(maps);
        Ok((r, underlay_mtu))
    }

    /// Bring routes (and `SL_NODES`) in line with the other nodes. Errors for one node do not
    /// stop the others; they are logged.
    pub async fn sync(&mut self, nodes: &BTreeMap<String, NodeInfo>, hostnet: &HostNet, datapath: &Datapath) {
        let maps = &datapath.maps;
        if self.mode == Mode::Native {
            self.ensure_uplink(nodes, hostnet, datapath).await;
        }
        let prefer_v4 = nodes
            .get(&self.node_name)
            .is_none_or(|n| n.internal_ips.iter().any(|a| a.is_ipv4()));
        let mut want: BTreeMap<IpNetwork, Programmed> = BTreeMap::new();
        for (name, n) in nodes {
            if *name == self.node_name {
                continue;
            }
            for cidr in &n.pod_cidrs {
                match underlay_address(n, cidr.is_ipv4(), self.mode, prefer_v4) {
                    Some(via) => {
                        want.insert(
                            *cidr,
                            Programmed {
                                node: name.clone(),
                                via,
                            },
                        );
                    }
                    None => {
                        tracing::warn!(node = %name, %cidr, mode = self.mode.name(), "no usable InternalIP to route this pod CIDR")
                    }
                }
            }
        }
        for (cidr, p) in &want {
            if self.routes.get(cidr) == Some(p) {
                continue;
            }
            let src = self
                .gateways
                .iter()
                .copied()
                .find(|g| g.is_ipv4() == cidr.is_ipv4());
            let vxlan = self.vxlan_ifindex.map(|ifindex| OverlayHop {
                ifindex,
                vni: self.vni,
                gateway: overlay_gateway(*cidr),
                mac: node_vxlan_mac(&p.node),
            });
            if let Err(e) = hostnet.add_remote_route(*cidr, p.via, vxlan, src).await {
                tracing::error!(node = %p.node, %cidr, error = %crate::node::chain(&e), "routing a remote pod CIDR");
                continue;
            }
            // Both modes: vxlan tunnels to the node, native forwards by FIB lookup, and only
            // toward addresses known to be pods (the rest keeps the host stack's path).
            {
                let v = RemoteNode {
                    node_ip: ip128(p.via),
                    flags: if p.via.is_ipv4() { NODE_F_UNDERLAY_V4 } else { 0 },
                    mac: node_vxlan_mac(&p.node),
                    _pad: [0; 2],
                };
                if let Err(e) = maps.node_insert(&prefix_key(*cidr), &v) {
                    tracing::error!(%cidr, error = %crate::node::chain(&e), "SL_NODES");
                    continue;
                }
            }
            tracing::info!(node = %p.node, %cidr, via = %p.via, mode = self.mode.name(), "route to remote pods");
            self.routes.insert(*cidr, p.clone());
        }
        let gone: Vec<IpNetwork> = self
            .routes
            .keys()
            .filter(|c| !want.contains_key(c))
            .copied()
            .collect();
        for cidr in gone {
            let _ = maps.node_remove(&prefix_key(cidr));
            if let Err(e) = hostnet.del_route(cidr).await {
                tracing::error!(%cidr, error = %crate::node::chain(&e), "removing the route of a departed node");
                continue;
            }
            if let Some(ifindex) = self.vxlan_ifindex
                && let Err(e) = hostnet.del_neighbour(ifindex, overlay_gateway(cidr)).await
            {
                tracing::warn!(%cidr, error = %crate::node::chain(&e), "removing the overlay neighbour of a departed node");
            }
            let p = self.routes.remove(&cidr);
            tracing::info!(node = ?p.map(|p| p.node), %cidr, "node left: route removed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vxlan_macs_are_stable_unicast_and_distinct() {
        let a = node_vxlan_mac("node-1");
        assert_eq!(a, node_vxlan_mac("node-1"));
        assert_ne!(a, node_vxlan_mac("node-2"));
        // Locally administered, unicast.
        assert_eq!(a[0] & 0b11, 0b10);
    }

    #[test]
    fn overlay_gateway_is_the_cidr_network_address() {
        assert_eq!(
            overlay_gateway("10.244.3.0/24".parse().unwrap()),
            "10.244.3.0".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            overlay_gateway("fd00:10:244:3::/64".parse().unwrap()),
            "fd00:10:244:3::".parse::<IpAddr>().unwrap()
        );
    }
}
