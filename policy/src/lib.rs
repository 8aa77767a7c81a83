//! Kubernetes NetworkPolicy (`networking.k8s.io/v1`) for sluice, as pure functions:
//!
//! - [`model`]: what the node knows of the cluster (namespaces, pods, policies);
//! - [`compile`]: the compiler to what the datapath looks up (identities, ipcache, allow
//!   entries), with a Rust mirror of the datapath's lookup for tests and explanations;
//! - [`reference`]: a direct, unoptimised reading of the API's semantics, the oracle the
//!   compiler is tested against.
//!
//! No I/O here: the daemon feeds the model from manifests or the API server and writes what
//! the compiler produces into the eBPF maps.

pub mod compile;
pub mod identity;
pub mod manifests;
pub mod model;
pub mod ports;
pub mod reference;
pub mod regions;
pub mod selector;
