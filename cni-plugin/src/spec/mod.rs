//! The CNI specification as sluice reads and writes it: error codes, versions, the `CNI_*`
//! environment, `CNI_ARGS`, the network configuration and results. Pure parsing and
//! formatting, no side effects.

pub mod args;
pub mod config;
pub mod env;
pub mod error;
pub mod result;
pub mod version;
