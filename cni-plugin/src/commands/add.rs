//! ADD: validate everything first, then lease addresses, create the veth pair with its pod
//! end directly in the pod's netns, configure the pod side, and have sluiced wire the
//! datapath. Any failure undoes the steps already taken, in reverse order.

use sluice_api::{Allocation, PodRef, RegisterEndpoint, Registered, Request};

use super::{
    attachment,
    pod::{self, format_mac, random_mac},
};
use crate::{
    daemon::{Daemon, to_cni},
    netlink::{Netlink, NetlinkError, ns_fd},
    netns::{NetNs, NetNsError},
    spec::{
        config::{NetConf, parse_requested_mac},
        env::Env,
        error::{CniError, CniResult, Code},
        result::{CniOutcome, Interface},
    },
};

pub fn netlink_err(e: NetlinkError) -> CniError {
    CniError::new(Code::Netlink, e.to_string())
}

pub fn netns_err(e: NetNsError) -> CniError {
    match e {
        NetNsError::Open { .. } | NetNsError::NotNetns { .. } => {
            CniError::new(Code::InvalidEnv, format!("CNI_NETNS: {e}"))
        }
        NetNsError::Enter { .. } => CniError::new(Code::Internal, e.to_string()),
    }
}

/// A step taken, to be undone if a later one fails.
enum Undo {
    Release,
    DeleteVeth(String),
    Deregister,
}

pub fn add(env: &Env, conf: &NetConf) -> CniResult<CniOutcome> {
    // ---- validate (nothing changes until every input is known good) ----
    let netns_path = env
        .netns
        .as_deref()
        .expect("CNI_NETNS required for ADD by env::read");
    let pod_ns = NetNs::open(netns_path).map_err(netns_err)?;
    if pod_ns.is_current().map_err(netns_err)? {
        return Err(CniError::new(
            Code::InvalidEnv,
            format!("CNI_NETNS {netns_path} is the plugin's own network namespace"),
        ));
    }
    let prev = match &conf.prev_result {
        Some(p) => Some(CniOutcome::from_json(p)?),
        None => None,
    };
    let mut requested = conf.requested_ips.clone();
    for ip in &env.args.ips {
        if !requested.contains(ip) {
            requested.push(*ip);
        }
    }
    let pod_mac = match (conf.requested_mac, &env.args.mac) {
        (Some(m), _) => m,
        (None, Some(s)) => parse_requested_mac("CNI_ARGS MAC", s).map_err(|mut e| {
            e.code = Code::InvalidEnv;
            e
        })?,
        (None, None) => random_mac(),
    };
    let mut pod_nl = pod_ns
        .run(Netlink::open)
        .map_err(netns_err)?
        .map_err(netlink_err)?;
    if pod_nl.link_by_name(&env.ifname).map_err(netlink_err)?.is_some() {
        return Err(CniError::new(
            Code::InterfaceExists,
            format!("interface {} already exists in {netns_path}", env.ifname),
        ));
    }
    let mut host_nl = Netlink::open().map_err(netlink_err)?;
    let host_name = sluice_api::host_ifname(&env.container_id, &env.ifname);
    if let Some(stale) = host_nl.link_by_name(&host_name).map_err(netlink_err)? {
        // Named after this very attachment: a previous ADD of it left it behind (its pod
        // end lives elsewhere, since the pod has no such interface). Replace it.
        host_nl.delete_link(stale.index).map_err(netlink_err)?;
    }
    let daemon = Daemon::new(&conf.daemon_socket);
    let a = attachment(env);
    let pod = match (&env.args.pod_namespace, &env.args.pod_name) {
        (Some(ns), Some(name)) => Some(PodRef {
            namespace: ns.clone(),
            name: name.clone(),
        }),
        _ => None,
    };

    // ---- mutate, remembering how to undo ----
    let mut done: Vec<Undo> = Vec::new();
    let result = (|| -> CniResult<CniOutcome> {
        let alloc: Allocation = daemon
            .call(&Request::Allocate {
                attachment: a.clone(),
                pod: pod.clone(),
                requested: requested.clone(),
            })
            .map_err(to_cni)?;
        done.push(Undo::Release);
        let mtu = conf.mtu.unwrap_or(alloc.mtu);
        let host_mac = random_mac();
        host_nl
            .create_veth(&host_name, host_mac, &env.ifname, pod_mac, ns_fd(&pod_ns), mtu)
            .map_err(|e| match e.errno() {
                Some(libc::EEXIST) => CniError::new(
                    Code::InterfaceExists,
                    format!("interface {} or {host_name} already exists", env.ifname),
                ),
                _ => netlink_err(e),
            })?;
        done.push(Undo::DeleteVeth(host_name.clone()));
        let pod_link = pod_nl
            .link_by_name(&env.ifname)
            .map_err(netlink_err)?
            .ok_or_else(|| CniError::new(Code::Netlink, format!("{} vanished after creation", env.ifname)))?;
        pod::configure(&mut pod_nl, pod_link.index, &alloc.ips).map_err(netlink_err)?;
        let host_link = host_nl
            .link_by_name(&host_name)
            .map_err(netlink_err)?
            .ok_or_else(|| CniError::new(Code::Netlink, format!("{host_name} vanished after creation")))?;
        host_nl.set_up(host_link.index).map_err(netlink_err)?;
        let _: Registered = daemon
            .call(&Request::Register(Box::new(RegisterEndpoint {
                attachment: a.clone(),
                pod: pod.clone(),
                host_ifname: host_name.clone(),
                pod_mac: format_mac(&pod_mac),
                ips: alloc.ips.iter().map(|i| i.address).collect(),
                netns: netns_path.to_owned(),
            })))
            .map_err(to_cni)?;
        done.push(Undo::Deregister);

        let (ips, routes) = pod::result_ips(&alloc.ips, 1);
        Ok(CniOutcome {
            interfaces: vec![
                Interface {
                    name: host_name.clone(),
                    mac: format_mac(&host_mac),
                    mtu: Some(mtu),
                    sandbox: String::new(),
                },
                Interface {
                    name: env.ifname.clone(),
                    mac: format_mac(&pod_mac),
                    mtu: Some(mtu),
                    sandbox: netns_path.to_owned(),
                },
            ],
            ips,
            routes,
            dns: conf.dns.clone(),
        })
    })();

    match result {
        Ok(ours) => Ok(match prev {
            Some(p) => p.chain(ours),
            None => ours,
        }),
        Err(e) => {
            rollback(&daemon, &a, &mut host_nl, done, conf);
            Err(e)
        }
    }
}

/// Undo the steps taken, newest first, continuing past failures (they are logged). A release
/// the daemon cannot take now is queued for it.
fn rollback(
    daemon: &Daemon,
    a: &sluice_api::Attachment,
    host_nl: &mut Netlink,
    done: Vec<Undo>,
    conf: &NetConf,
) {
    for step in done.into_iter().rev() {
        let r: Result<(), String> = match step {
            Undo::Deregister => daemon
                .call::<()>(&Request::Deregister {
                    attachment: a.clone(),
                })
                .map_err(|e| e.to_string()),
            Undo::DeleteVeth(name) => match host_nl.link_by_name(&name) {
                Ok(Some(l)) => host_nl.delete_link(l.index).map_err(|e| e.to_string()),
                Ok(None) => Ok(()),
                Err(e) => Err(e.to_string()),
            },
            Undo::Release => match daemon.call::<serde_json::Value>(&Request::Teardown {
                attachment: a.clone(),
            }) {
                Ok(_) => Ok(()),
                Err(e) if e.is_unreachable() => daemon
                    .queue_teardown(a)
                    .map(|_| ())
                    .map_err(|q| format!("{e}; queueing failed: {q}")),
                Err(e) => Err(e.to_string()),
            },
        };
        if let Err(msg) = r {
            eprintln!("sluice: rollback of {a}: {msg}");
            crate::log_line(Some(conf), &format!("rollback of {a}: {msg}"));
        }
    }
}
