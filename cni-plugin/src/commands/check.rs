//! CHECK: compare the live state with `prevResult`: the pod interface (name, MAC, MTU), its
//! addresses and routes, the host veth, and what sluiced says of the lease and the datapath.
//! An unreachable sluiced is "try again later" (11).

use sluice_api::{Inspection, Request};

use super::{attachment, pod};
use crate::{
    daemon::{Daemon, to_cni},
    netlink::Netlink,
    netns::NetNs,
    spec::{
        config::NetConf,
        env::Env,
        error::{CniError, CniResult, Code},
        result::CniOutcome,
    },
};

fn fail(msg: String) -> CniError {
    CniError::new(Code::Internal, msg)
}

pub fn check(env: &Env, conf: &NetConf) -> CniResult<()> {
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::new(Code::InvalidConfig, "CHECK needs prevResult (the result of ADD)"))?;
    let prev = CniOutcome::from_json(prev)?;
    let netns = env
        .netns
        .as_deref()
        .expect("CNI_NETNS required for CHECK by env::read");
    let ours = prev
        .interfaces
        .iter()
        .position(|i| i.name == env.ifname && (i.sandbox.is_empty() || i.sandbox == netns))
        .ok_or_else(|| fail(format!("prevResult has no interface {} in {netns}", env.ifname)))?;
    let iface = &prev.interfaces[ours];

    // sluiced first: CHECK must fail while it cannot vouch for the datapath.
    let daemon = Daemon::new(&conf.daemon_socket);
    let insp: Inspection = daemon
        .call(&Request::Inspect {
            attachment: attachment(env),
        })
        .map_err(to_cni)?;
    if !insp.datapath_ok {
        return Err(CniError::new(
            Code::Datapath,
            format!(
                "datapath of {}/{} is not intact: {}",
                env.container_id,
                env.ifname,
                insp.problems.join("; ")
            ),
        ));
    }

    let pod_ns = NetNs::open(netns).map_err(super::add::netns_err)?;
    let mut nl = pod_ns
        .run(Netlink::open)
        .map_err(super::add::netns_err)?
        .map_err(super::add::netlink_err)?;
    let link = nl
        .link_by_name(&env.ifname)
        .map_err(super::add::netlink_err)?
        .ok_or_else(|| fail(format!("interface {} is missing from {netns}", env.ifname)))?;
    if !iface.mac.is_empty() && !iface.mac.eq_ignore_ascii_case(&pod::format_mac(&link.mac)) {
        return Err(fail(format!(
            "interface {} has MAC {}, prevResult says {}",
            env.ifname,
            pod::format_mac(&link.mac),
            iface.mac
        )));
    }
    if let Some(m) = iface.mtu
        && m != link.mtu
    {
        return Err(fail(format!(
            "interface {} has MTU {}, prevResult says {m}",
            env.ifname, link.mtu
        )));
    }
    if !link.up {
        return Err(fail(format!("interface {} is down", env.ifname)));
    }
    let addrs = nl.addresses(link.index).map_err(super::add::netlink_err)?;
    let mut want_gateways = Vec::new();
    for ip in prev.ips.iter().filter(|ip| ip.interface == Some(ours)) {
        if !addrs
            .iter()
            .any(|a| a.ip == ip.address.ip() && a.prefix == ip.address.prefix())
        {
            return Err(fail(format!(
                "address {} is missing from {}",
                ip.address, env.ifname
            )));
        }
        if !insp.ips.contains(&ip.address.ip()) {
            return Err(fail(format!(
                "sluiced has no lease of {} for this attachment",
                ip.address.ip()
            )));
        }
        if let Some(g) = ip.gateway {
            want_gateways.push(g);
        }
    }
    for route in &prev.routes {
        let v4 = route.dst.is_ipv4();
        let routes = nl.routes(v4).map_err(super::add::netlink_err)?;
        let present = routes.iter().any(|r| {
            r.prefix == route.dst.prefix()
                && (route.dst.prefix() == 0 || r.dst == route.dst.network())
                && r.gateway == route.gw
                && r.oif == Some(link.index)
        });
        if !present {
            return Err(fail(format!(
                "route to {} via {:?} is missing from {}",
                route.dst, route.gw, env.ifname
            )));
        }
    }
    for g in want_gateways {
        let routes = nl.routes(g.is_ipv4()).map_err(super::add::netlink_err)?;
        if !routes
            .iter()
            .any(|r| r.dst == g && r.prefix == pod::host_prefix(&g) && r.oif == Some(link.index))
        {
            return Err(fail(format!(
                "on-link route to gateway {g} is missing from {}",
                env.ifname
            )));
        }
    }
    let mut host_nl = Netlink::open().map_err(super::add::netlink_err)?;
    let host = sluice_api::host_ifname(&env.container_id, &env.ifname);
    if host_nl
        .link_by_name(&host)
        .map_err(super::add::netlink_err)?
        .is_none()
    {
        return Err(fail(format!("host interface {host} is missing")));
    }
    Ok(())
}
