//! GC (CNI 1.1): release every lease and endpoint of this node that is not among
//! `cni.dev/valid-attachments`. sluiced carries on past individual failures; they are reported.

use sluice_api::{GcReport, Request};

use crate::{
    daemon::{Daemon, to_cni},
    spec::{
        config::NetConf,
        error::{CniError, CniResult, Code},
    },
};

pub fn gc(conf: &NetConf) -> CniResult<()> {
    // Without the list every attachment would look stale: refuse rather than release all.
    let valid = conf.valid_attachments.clone().ok_or_else(|| {
        CniError::new(
            Code::InvalidConfig,
            "GC needs cni.dev/valid-attachments (or cni.dev/attachments)",
        )
    })?;
    let report: GcReport = Daemon::new(&conf.daemon_socket)
        .call(&Request::Gc { valid })
        .map_err(to_cni)?;
    for a in &report.released {
        crate::log_line(Some(conf), &format!("GC released {a}"));
    }
    if report.errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            Code::Internal,
            format!(
                "GC released {} attachments but {} failed",
                report.released.len(),
                report.errors.len()
            ),
        )
        .with_details(report.errors.join("; ")))
    }
}
