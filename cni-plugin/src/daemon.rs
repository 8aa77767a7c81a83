//! Talking to sluiced from the plugin: connect with timeouts, map the daemon's error kinds to
//! CNI codes, and queue teardowns on disk when the daemon is down (it applies them when it
//! starts, so a DEL never fails and never leaks because of a daemon restart).

use std::{
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::de::DeserializeOwned;
use sluice_api::{Attachment, Client, ClientError, ErrorKind, Request};

use crate::spec::error::{CniError, Code};

/// How long one daemon call may take (an ADD's register waits for policy to be in place).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Daemon {
    socket: PathBuf,
}

pub fn code_for(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::PoolExhausted => Code::PoolExhausted,
        ErrorKind::AddressUnavailable => Code::AddressUnavailable,
        ErrorKind::UnknownAttachment => Code::UnknownContainer,
        ErrorKind::Datapath => Code::Datapath,
        ErrorKind::Netlink => Code::Netlink,
        ErrorKind::PolicyCapacity => Code::PolicyCapacity,
        ErrorKind::NotReady => Code::TryAgainLater,
        ErrorKind::BadRequest | ErrorKind::Internal => Code::Internal,
    }
}

/// A client error as a CNI error. An unreachable daemon is transient: try again later.
pub fn to_cni(e: ClientError) -> CniError {
    match e {
        ClientError::Daemon(api) => CniError::new(code_for(api.kind), format!("sluiced: {}", api.message)),
        ClientError::Protocol(m) => {
            CniError::new(Code::DaemonProtocol, format!("sluiced replied unexpectedly: {m}"))
        }
        e @ (ClientError::Unreachable { .. } | ClientError::Io { .. }) => {
            CniError::new(Code::TryAgainLater, e.to_string())
                .with_details("is sluiced running? (try again later)")
        }
    }
}

impl Daemon {
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_owned(),
        }
    }

    /// One request, one reply (a fresh connection each: the plugin makes a handful of calls).
    pub fn call<T: DeserializeOwned>(&self, req: &Request) -> Result<T, ClientError> {
        Client::connect(&self.socket, CALL_TIMEOUT)?.call(req)
    }

    /// Queue a teardown for when the daemon is back: one root-only file per attachment in
    /// `<socket dir>/pending-del/`, written atomically; at most `PENDING_MAX` files.
    pub fn queue_teardown(&self, a: &Attachment) -> std::io::Result<PathBuf> {
        let dir = self
            .socket
            .parent()
            .unwrap_or(Path::new("/"))
            .join(sluice_api::PENDING_DIR_NAME);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let name = format!("{}.json", sluice_api::host_ifname(&a.container_id, &a.ifname));
        let path = dir.join(&name);
        if !path.exists() {
            let queued = std::fs::read_dir(&dir)?.count();
            if queued >= sluice_api::PENDING_MAX {
                return Err(std::io::Error::other(format!(
                    "{} teardowns already queued in {}",
                    queued,
                    dir.display()
                )));
            }
        }
        let tmp = dir.join(format!(".{name}.{}", std::process::id()));
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&serde_json::to_vec(a).expect("serialize attachment"))?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }
}
