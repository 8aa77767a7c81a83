//! The node's side of pod networking, over rtnetlink: the gateway device that holds the pods'
//! gateway addresses, one host route per pod address through its host veth, and lookups of
//! the host veths. Only ever touches interfaces and routes sluice created (its gateway device,
//! its veths, routes through them).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use netlink_packet_route::{
    address::{AddressAttribute, AddressFlags},
    link::LinkAttribute,
    route::RouteScope,
    tc::{TcAttribute, TcHandle},
};
use rtnetlink::{Handle, LinkDummy, LinkUnspec, LinkVeth, RouteMessageBuilder};

#[derive(Debug, thiserror::Error)]
pub enum HostNetError {
    #[error("netlink: {op}: {source}")]
    Netlink {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("netlink connection: {0}")]
    Connect(#[source] std::io::Error),
    #[error("writing {path}: {source}")]
    Sysctl {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn nl(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> HostNetError {
    let op = op.into();
    move |source| HostNetError::Netlink { op, source }
}

/// errno of a netlink error reply, if it is one.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// A host-side interface as the daemon needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostLink {
    pub index: u32,
    pub mac: [u8; 6],
    pub mtu: u32,
}

#[derive(Clone)]
pub struct HostNet {
    handle: Handle,
}

impl HostNet {
    /// Open a netlink connection in the daemon's network namespace.
    pub fn connect() -> Result<Self, HostNetError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(HostNetError::Connect)?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// Look an interface up by name; `None` if there is none.
    pub async fn link(&self, name: &str) -> Result<Option<HostLink>, HostNetError> {
        let mut links = self.handle.link().get().match_name(name.to_owned()).execute();
        match links.try_next().await {
            Ok(Some(msg)) => {
                let mut link = HostLink {
                    index: msg.header.index,
                    mac: [0; 6],
                    mtu: 0,
                };
                for a in msg.attributes {
                    match a {
                        LinkAttribute::Address(m) if m.len() == 6 => link.mac.copy_from_slice(&m),
                        LinkAttribute::Mtu(m) => link.mtu = m,
                        _ => {}
                    }
                }
                Ok(Some(link))
            }
            Ok(None) => Ok(None),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(nl(format!("get link {name}"))(e)),
        }
    }

    /// The MTU of the interface that holds `ip`, if any does.
    pub async fn mtu_of_address(&self, ip: IpAddr) -> Result<Option<u32>, HostNetError> {
        let Some(index) = self.index_of_address(ip).await? else {
            return Ok(None);
        };
        let mut links = self.handle.link().get().match_index(index).execute();
        match links.try_next().await {
            Ok(Some(m)) => Ok(m.attributes.iter().find_map(|a| match a {
                LinkAttribute::Mtu(v) => Some(*v),
                _ => None,
            })),
            _ => Ok(None),
        }
    }

    /// The ifindex of the interface holding `ip`, if any.
    pub async fn index_of_address(&self, ip: IpAddr) -> Result<Option<u32>, HostNetError> {
        let mut addrs = self.handle.address().get().execute();
        while let Some(a) = addrs.try_next().await.map_err(nl("list addresses"))? {
            let has = a
                .attributes
                .iter()
                .any(|x| matches!(x, AddressAttribute::Address(v) | AddressAttribute::Local(v) if *v == ip));
            if has {
                return Ok(Some(a.header.index));
            }
        }
        Ok(None)
    }

    /// Create (or keep) the node's collect-metadata VXLAN device: `external` (the tunnel
    /// endpoint comes with each packet), no learning, the given MAC and MTU, up. Neighbours on
    /// it are the permanent entries `add_remote_route` writes (ARP stays on so the kernel
    /// uses them; it never has to resolve anything else there).
    pub async fn ensure_vxlan(
        &self,
        name: &str,
        port: u16,
        mtu: u32,
        mac: [u8; 6],
    ) -> Result<u32, HostNetError> {
        if self.link(name).await?.is_none() {
            let msg = rtnetlink::LinkMessageBuilder::<rtnetlink::LinkVxlan>::new(name)
                .collect_metadata(true)
                .learning(false)
                .port(port)
                .build();
            self.handle
                .link()
                .add(msg)
                .execute()
                .await
                .map_err(nl(format!("create vxlan {name}")))?;
        }
        let link = self.link(name).await?.ok_or_else(|| HostNetError::Netlink {
            op: format!("find {name} after creating it"),
            source: rtnetlink::Error::RequestFailed,
        })?;
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(link.index)
                    .mtu(mtu)
                    .address(mac.to_vec())
                    .arp(true)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(nl(format!("configure {name}")))?;
        Ok(link.index)
    }

    /// Route `net` through another node: via its address (native routing), or into the VXLAN
    /// device with that node as tunnel endpoint (lightweight tunnel encap), with `src` as the
    /// node's own source address towards it. Replaces any route to `net`.
    pub async fn add_remote_route(
        &self,
        net: ipnetwork::IpNetwork,
        via: IpAddr,
        overlay: Option<OverlayHop>,
        src: Option<IpAddr>,
    ) -> Result<(), HostNetError> {
        use netlink_packet_route::route::{
            RouteIp6Tunnel, RouteIp6TunnelFlags, RouteIpTunnel, RouteIpTunnelFlags,
        };
        let invalid = |e| invalid_route(net, via, e);
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(net.network(), net.prefix())
            .map_err(invalid)?;
        if let Some(s) = src.filter(|s| s.is_ipv4() == net.is_ipv4()) {
            b = b.pref_source(s).map_err(invalid)?;
        }
        match overlay {
            None if via.is_ipv4() != net.is_ipv4() => {
                return Err(HostNetError::Netlink {
                    op: format!("route {net} natively via {via}: the families differ"),
                    source: rtnetlink::Error::RequestFailed,
                });
            }
            None => b = b.gateway(via).map_err(invalid)?,
            Some(hop) => {
                self.handle
                    .neighbours()
                    .add(hop.ifindex, hop.gateway)
                    .link_layer_address(&hop.mac)
                    .state(netlink_packet_route::neighbour::NeighbourState::Permanent)
                    .replace()
                    .execute()
                    .await
                    .map_err(nl(format!("neighbour {} for {net}", hop.gateway)))?;
                b = b
                    .gateway(hop.gateway)
                    .map_err(invalid)?
                    .onlink()
                    .output_interface(hop.ifindex);
                // UDP checksums, as the eBPF path's tunnel key asks: an IPv6 receiver drops
                // zero-checksum UDP.
                b = match via {
                    IpAddr::V4(v) => b.encap_ip(vec![
                        RouteIpTunnel::Id(hop.vni as u64),
                        RouteIpTunnel::Destination(v),
                        RouteIpTunnel::Ttl(64),
                        RouteIpTunnel::Flags(RouteIpTunnelFlags::Key | RouteIpTunnelFlags::Checksum),
                    ]),
                    IpAddr::V6(v) => b.encap_ip6(vec![
                        RouteIp6Tunnel::Id(hop.vni as u64),
                        RouteIp6Tunnel::Destination(v),
                        RouteIp6Tunnel::Hoplimit(64),
                        RouteIp6Tunnel::Flags(RouteIp6TunnelFlags::Key | RouteIp6TunnelFlags::Checksum),
                    ]),
                };
            }
        }
        self.handle
            .route()
            .add(b.build())
            .replace()
            .execute()
            .await
            .map_err(nl(format!("route {net} via {via}")))
    }

    /// Remove the neighbour entry for `ip` on `index`. Gone already is fine.
    pub async fn del_neighbour(&self, index: u32, ip: IpAddr) -> Result<(), HostNetError> {
        let mut msg = netlink_packet_route::neighbour::NeighbourMessage::default();
        msg.header.ifindex = index;
        msg.header.family = match ip {
            IpAddr::V4(_) => netlink_packet_route::AddressFamily::Inet,
            IpAddr::V6(_) => netlink_packet_route::AddressFamily::Inet6,
        };
        msg.attributes
            .push(netlink_packet_route::neighbour::NeighbourAttribute::Destination(
                ip.into(),
            ));
        match self.handle.neighbours().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(libc::ENOENT) | Some(libc::ENODEV)) => Ok(()),
            Err(e) => Err(nl(format!("delete neighbour {ip}"))(e)),
        }
    }

    /// Remove the route to `net` (main table). Gone already is fine.
    pub async fn del_route(&self, net: ipnetwork::IpNetwork) -> Result<(), HostNetError> {
        let msg = match net {
            ipnetwork::IpNetwork::V4(n) => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(n.network(), n.prefix())
                .build(),
            ipnetwork::IpNetwork::V6(n) => RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(n.network(), n.prefix())
                .build(),
        };
        match self.handle.route().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(libc::ESRCH) | Some(libc::ENOENT)) => Ok(()),
            Err(e) => Err(nl(format!("delete route {net}"))(e)),
        }
    }

    /// Every interface here: (ifindex, name).
    pub async fn links(&self) -> Result<Vec<(u32, String)>, HostNetError> {
        let mut out = Vec::new();
        let mut links = self.handle.link().get().execute();
        while let Some(msg) = links.try_next().await.map_err(nl("list links"))? {
            let name = msg.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            });
            if let Some(n) = name {
                out.push((msg.header.index, n));
            }
        }
        Ok(out)
    }

    /// Delete an interface (a veth takes its peer along). Gone already is fine.
    pub async fn delete_link(&self, index: u32) -> Result<(), HostNetError> {
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(nl(format!("delete ifindex {index}"))(e)),
        }
    }

    /// Does this interface have a clsact qdisc (sluice's first attachment)?
    pub async fn has_clsact(&self, index: u32) -> Result<bool, HostNetError> {
        let mut qdiscs = self.handle.qdisc().get().index(index as i32).execute();
        loop {
            match qdiscs.try_next().await {
                Ok(Some(m)) => {
                    let clsact = m
                        .attributes
                        .iter()
                        .any(|a| matches!(a, TcAttribute::Kind(k) if k == "clsact"));
                    if m.header.index == index as i32 && clsact {
                        return Ok(true);
                    }
                }
                Ok(None) => return Ok(false),
                Err(e) if errno(&e) == Some(libc::ENODEV) => return Ok(false),
                Err(e) => return Err(nl(format!("list qdiscs of ifindex {index}"))(e)),
            }
        }
    }

    /// Remove the clsact qdisc (and with it any filter left). Absent is fine.
    pub async fn delete_clsact(&self, index: u32) -> Result<(), HostNetError> {
        let mut req = self.handle.qdisc().del(index as i32);
        req.message_mut().header.parent = TcHandle::CLSACT;
        req.message_mut().header.handle = TcHandle {
            major: 0xffff,
            minor: 0,
        };
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    errno(&e),
                    Some(libc::ENOENT) | Some(libc::EINVAL) | Some(libc::ENODEV)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(nl(format!("delete clsact of ifindex {index}"))(e)),
        }
    }

    /// Create (or keep) the dummy device that holds the pods' gateway addresses, up, with
    /// each gateway as a host address. Node-to-pod traffic takes its source from it.
    pub async fn ensure_gateway_device(&self, name: &str, gateways: &[IpAddr]) -> Result<u32, HostNetError> {
        let link = match self.link(name).await? {
            Some(l) => l,
            None => {
                let dummy = self
                    .handle
                    .link()
                    .add(LinkDummy::new(name).up().build())
                    .execute()
                    .await;
                match dummy {
                    Ok(()) => {}
                    // Kernels built without CONFIG_DUMMY: a veth pair does the job (its peer,
                    // `<name>p`, stays unused), as Cilium's cilium_host/cilium_net do.
                    Err(e) if errno(&e) == Some(libc::EOPNOTSUPP) => {
                        let peer = format!("{}p", &name[..name.len().min(14)]);
                        self.handle
                            .link()
                            .add(LinkVeth::new(name, &peer).up().build())
                            .execute()
                            .await
                            .map_err(nl(format!("create veth {name}")))?;
                        if let Some(p) = self.link(&peer).await? {
                            self.handle
                                .link()
                                .set(LinkUnspec::new_with_index(p.index).up().build())
                                .execute()
                                .await
                                .map_err(nl(format!("set {peer} up")))?;
                        }
                    }
                    Err(e) => return Err(nl(format!("create dummy {name}"))(e)),
                }
                self.link(name).await?.ok_or_else(|| HostNetError::Netlink {
                    op: format!("find {name} after creating it"),
                    source: rtnetlink::Error::RequestFailed,
                })?
            }
        };
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(link.index).up().build())
            .execute()
            .await
            .map_err(nl(format!("set {name} up")))?;
        for gw in gateways {
            let len = if gw.is_ipv4() { 32 } else { 128 };
            let mut req = self.handle.address().add(link.index, *gw, len).replace();
            if gw.is_ipv6() {
                req.message_mut()
                    .attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
            req.execute()
                .await
                .map_err(nl(format!("add {gw}/{len} to {name}")))?;
        }
        Ok(link.index)
    }

    /// Route a pod address through its host veth, preferring `src` as the node's source
    /// address towards it. Replaces any route to the same address.
    pub async fn add_pod_route(
        &self,
        ip: IpAddr,
        ifindex: u32,
        src: Option<IpAddr>,
    ) -> Result<(), HostNetError> {
        let msg = match ip {
            IpAddr::V4(v4) => {
                let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(v4, 32)
                    .output_interface(ifindex)
                    .scope(RouteScope::Link);
                if let Some(IpAddr::V4(s)) = src {
                    b = b.pref_source(s);
                }
                b.build()
            }
            IpAddr::V6(v6) => {
                let mut b = RouteMessageBuilder::<Ipv6Addr>::new()
                    .destination_prefix(v6, 128)
                    .output_interface(ifindex);
                if let Some(IpAddr::V6(s)) = src {
                    b = b.pref_source(s);
                }
                b.build()
            }
        };
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(nl(format!("route {ip} via ifindex {ifindex}")))
    }

    /// Remove the route of a pod address through `ifindex`. Succeeds when it is gone already.
    pub async fn del_pod_route(&self, ip: IpAddr, ifindex: u32) -> Result<(), HostNetError> {
        let msg = match ip {
            IpAddr::V4(v4) => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(v4, 32)
                .output_interface(ifindex)
                .scope(RouteScope::Link)
                .build(),
            IpAddr::V6(v6) => RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(v6, 128)
                .output_interface(ifindex)
                .build(),
        };
        match self.handle.route().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    errno(&e),
                    Some(libc::ESRCH) | Some(libc::ENOENT) | Some(libc::ENODEV)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(nl(format!("delete route {ip}"))(e)),
        }
    }

    /// Is `ip` routed through `ifindex`? (CNI CHECK.)
    pub async fn has_pod_route(&self, ip: IpAddr, ifindex: u32) -> Result<bool, HostNetError> {
        let msg = match ip {
            IpAddr::V4(v4) => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(v4, 32)
                .build(),
            IpAddr::V6(v6) => RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(v6, 128)
                .build(),
        };
        let mut routes = self.handle.route().get(msg).execute();
        while let Some(r) = routes.try_next().await.map_err(nl("list routes"))? {
            let len_ok = r.header.destination_prefix_length == if ip.is_ipv4() { 32 } else { 128 };
            let mut dst_ok = false;
            let mut oif_ok = false;
            for a in &r.attributes {
                match a {
                    netlink_packet_route::route::RouteAttribute::Destination(d) => {
                        dst_ok = match (d, ip) {
                            (netlink_packet_route::route::RouteAddress::Inet(a), IpAddr::V4(b)) => *a == b,
                            (netlink_packet_route::route::RouteAddress::Inet6(a), IpAddr::V6(b)) => *a == b,
                            _ => false,
                        }
                    }
                    netlink_packet_route::route::RouteAttribute::Oif(i) => oif_ok = *i == ifindex,
                    _ => {}
                }
            }
            if len_ok && dst_ok && oif_ok {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Turn on IP forwarding in the daemon's network namespace (needed for traffic between pods
/// and anything that is not a local pod: other nodes, the world).
pub fn enable_forwarding(v4: bool, v6: bool) -> Result<(), HostNetError> {
    let mut paths = Vec::new();
    if v4 {
        paths.push("/proc/sys/net/ipv4/ip_forward");
    }
    if v6 {
        paths.push("/proc/sys/net/ipv6/conf/all/forwarding");
    }
    for p in paths {
        // Nodes usually have it on already (kubelet and kube-proxy need it); a container whose
        // /proc/sys is read-only can then still start.
        if std::fs::read_to_string(p).is_ok_and(|v| v.trim() == "1") {
            continue;
        }
        std::fs::write(p, b"1").map_err(|source| HostNetError::Sysctl {
            path: p.into(),
            source,
        })?;
    }
    Ok(())
}

/// The overlay next hop toward a remote pod CIDR: the VXLAN device, the VNI, and the
/// gateway address whose permanent neighbour entry is the remote node's VXLAN MAC.
#[derive(Clone, Copy, Debug)]
pub struct OverlayHop {
    pub ifindex: u32,
    pub vni: u32,
    pub gateway: IpAddr,
    pub mac: [u8; 6],
}

/// A route message the builder refused (its error type is not exported by rtnetlink).
fn invalid_route(net: ipnetwork::IpNetwork, via: IpAddr, e: impl std::fmt::Display) -> HostNetError {
    HostNetError::Netlink {
        op: format!("route {net} via {via}: {e}"),
        source: rtnetlink::Error::RequestFailed,
    }
}
