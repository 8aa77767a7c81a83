//! Kubernetes NetworkPolicy (`networking.k8s.io/v1`) for sluice, as pure functions:
//!
//! - [`model`]: what the node knows of the cluster (namespaces, pods, policies);
//! - [`reference`]: a direct, unoptimised reading of the API's semantics, the oracle the
//!   compiler is tested against.
//!
//! No I/O here: the daemon feeds the model from manifests or the API server and writes what
//! the compiler produces into the eBPF maps.

pub mod model;
pub mod reference;
