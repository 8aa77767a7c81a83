//! The ABI shared by sluice's eBPF programs (`ebpf/sluice-ebpf`, built by Debian's rustc for
//! `bpfel-unknown-none`) and its userspace (`sluiced`, `sluicectl`).
//!
//! Every map key and value is `#[repr(C)]` with explicit padding, no `bool`, `Option` or enums;
//! flags are `u32` bit sets. Addresses are stored exactly as they appear on the wire (network
//! byte order), IPv4 mapped into IPv6 (`::ffff:a.b.c.d`), so one set of maps serves both
//! families. Map and program names live here only: the daemon's tests check that the object it
//! embeds defines each of them.
#![no_std]

pub mod conntrack;
pub mod endpoint;
pub mod event;
pub mod ip;
pub mod maps;
pub mod policy;
pub mod stats;

#[cfg(feature = "user")]
mod user;

/// Bumped whenever the layout of a map key/value or the meaning of a map changes. A daemon
/// refuses to re-adopt pinned maps written under another ABI version (see `sluiced --reset-datapath`).
/// 3: `RemoteNode` carries the node's VXLAN MAC, `DatapathConfig` this node's; one more
/// global counter (`from_uplink_to_pod`).
pub const ABI_VERSION: u32 = 3;

/// Traffic direction from the point of view of a pod.
pub mod direction {
    /// Into the pod.
    pub const INGRESS: u8 = 0;
    /// Out of the pod.
    pub const EGRESS: u8 = 1;
}

/// Program names, as the eBPF object exports them (the `#[classifier]` function names).
pub mod programs {
    /// tcx ingress of a pod's host-side veth: packets the pod sends.
    pub const FROM_POD: &str = "from_pod";
    /// tcx egress of a pod's host-side veth: packets the host stack delivers to the pod.
    pub const TO_POD: &str = "to_pod";
    /// tcx ingress of the node's uplink (native routing): packets from other nodes to local
    /// pods, policed and handed straight into the pod.
    pub const FROM_UPLINK: &str = "from_uplink";
    /// Every program, for pinning and checks.
    pub const ALL: [&str; 3] = [FROM_POD, TO_POD, FROM_UPLINK];
}
