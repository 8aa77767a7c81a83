//! The local API of `sluiced`: newline-delimited JSON over a root-only Unix stream socket.
//!
//! Each request is one JSON object on one line, tagged by `"op"`; each reply is one line,
//! either `{"ok": ...}` or `{"error": {"kind": ..., "message": ...}}`. `monitor` is the one
//! streaming request: after its `ok` reply, the daemon writes one event per line until the
//! client hangs up. Requests carry no version: unknown ops and fields are refused/ignored by
//! serde, and `status` reports the daemon's version.

pub mod client;
pub mod types;

pub use client::{Client, ClientError};
pub use types::*;

/// Where the daemon listens unless told otherwise (`sluiced --socket`, netconf `daemonSocket`).
pub const DEFAULT_SOCKET: &str = "/run/sluice/sluiced.sock";

/// Directory, beside the socket, where the CNI plugin queues teardowns it could not deliver
/// because the daemon was down; the daemon applies and removes them when it starts.
pub const PENDING_DIR_NAME: &str = "pending-del";

/// At most this many queued teardowns are kept (each is one small file).
pub const PENDING_MAX: usize = 4096;

/// The name of the host-side veth of an attachment: `sl` + 12 hex digits of a hash of the
/// container id and interface name. Deterministic, so that a DEL finds the interface without a
/// prevResult and the daemon can tell which veth belongs to which attachment; 14 characters,
/// within the kernel's 15.
pub fn host_ifname(container_id: &str, ifname: &str) -> String {
    // FNV-1a, 64 bits: stable across builds and platforms (unlike std's hasher).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in container_id.bytes().chain([0u8]).chain(ifname.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("sl{:012x}", h >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ifname_is_stable_short_and_distinct() {
        let a = host_ifname("abc", "eth0");
        assert_eq!(a, host_ifname("abc", "eth0"));
        assert_eq!(a.len(), 14);
        assert!(a.starts_with("sl"));
        assert_ne!(a, host_ifname("abc", "eth1"));
        assert_ne!(a, host_ifname("abd", "eth0"));
        // The separator keeps ("ab","ceth0") apart from ("abc","eth0").
        assert_ne!(host_ifname("ab", "ceth0"), a);
    }
}
