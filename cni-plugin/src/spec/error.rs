//! CNI errors: every refusal of the plugin is one of these, printed as the spec's error JSON
//! on stdout with a non-zero exit status. Codes below 100 are the spec's; 100 and up are
//! sluice's own (documented in the README).

use serde::Serialize;

/// Error codes. The spec's (1-11, 50, 51) and sluice's (100+).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Code {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnv = 4,
    Io = 5,
    Decode = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    /// STATUS: the plugin cannot serve ADD now.
    NotAvailable = 50,
    /// STATUS: not available, and existing pods may have limited connectivity.
    LimitedConnectivity = 51,
    /// Something unexpected (a bug, or the kernel refusing in a way we did not foresee).
    Internal = 100,
    /// The node's pod CIDR has no free address.
    PoolExhausted = 101,
    /// A requested address (IP=, runtimeConfig.ips) is outside the pod CIDRs or taken.
    AddressUnavailable = 102,
    /// CNI_IFNAME already exists in the container's network namespace.
    InterfaceExists = 103,
    /// A netlink operation (veth, address, route) failed.
    Netlink = 104,
    /// sluiced could not program the datapath (programs, maps).
    Datapath = 105,
    /// Policy state for this pod does not fit the datapath maps.
    PolicyCapacity = 106,
    /// sluiced answered with something the plugin did not expect.
    DaemonProtocol = 107,
}

/// A CNI error: `{"cniVersion", "code", "msg", "details"}`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{msg} ({details})")]
pub struct CniError {
    pub code: Code,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The JSON the runtime reads from stdout.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        #[derive(Serialize)]
        struct Out<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        serde_json::to_value(Out {
            cni_version,
            code: self.code as u32,
            msg: &self.msg,
            details: &self.details,
        })
        .expect("serialize error")
    }
}

pub type CniResult<T> = Result<T, CniError>;
