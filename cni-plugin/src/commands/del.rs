//! DEL: best effort and idempotent. Tell sluiced to tear the attachment down (queue it on
//! disk when sluiced is down), then delete the host veth (its pod end goes with it). Succeeds
//! whether or not the netns, the interface or the lease still exist, with or without
//! prevResult, as often as it is called.

use sluice_api::{ErrorKind, Request};

use super::attachment;
use crate::{
    daemon::{Daemon, to_cni},
    netlink::Netlink,
    spec::{
        config::NetConf,
        env::Env,
        error::{CniError, CniResult, Code},
    },
};

pub fn del(env: &Env, conf: &NetConf) -> CniResult<()> {
    let a = attachment(env);
    let daemon = Daemon::new(&conf.daemon_socket);
    match daemon.call::<serde_json::Value>(&Request::Teardown {
        attachment: a.clone(),
    }) {
        Ok(_) => {}
        Err(sluice_api::ClientError::Daemon(e)) if e.kind == ErrorKind::UnknownAttachment => {}
        Err(e) if e.is_unreachable() => {
            daemon.queue_teardown(&a).map_err(|q| {
                CniError::new(
                    Code::Io,
                    format!("sluiced is down and the teardown of {a} could not be queued: {q}"),
                )
            })?;
            crate::log_line(Some(conf), &format!("DEL {a}: sluiced down, teardown queued"));
        }
        Err(e) => return Err(to_cni(e)),
    }
    let mut nl = Netlink::open().map_err(super::add::netlink_err)?;
    let host = sluice_api::host_ifname(&env.container_id, &env.ifname);
    if let Some(l) = nl.link_by_name(&host).map_err(super::add::netlink_err)? {
        match nl.delete_link(l.index) {
            Ok(()) => {}
            // Gone in the meantime (the netns was deleted): fine.
            Err(e) if e.errno() == Some(libc::ENODEV) => {}
            Err(e) => return Err(super::add::netlink_err(e)),
        }
    }
    Ok(())
}
