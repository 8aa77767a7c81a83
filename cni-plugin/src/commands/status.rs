//! STATUS (CNI 1.1): ready to serve ADD when sluiced answers and says it is ready.

use sluice_api::{Request, Status};

use crate::{
    daemon::Daemon,
    spec::{
        config::NetConf,
        error::{CniError, CniResult, Code},
    },
};

pub fn status(conf: &NetConf) -> CniResult<()> {
    match Daemon::new(&conf.daemon_socket).call::<Status>(&Request::Status) {
        Ok(s) if s.ready => Ok(()),
        Ok(_) => Err(CniError::new(
            Code::NotAvailable,
            "sluiced is starting and not ready yet",
        )),
        Err(e) => Err(CniError::new(
            Code::NotAvailable,
            format!("sluice is not available: {e}"),
        )),
    }
}
