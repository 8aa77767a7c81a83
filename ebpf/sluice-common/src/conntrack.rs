//! sluice's own connection tracking, shared by every program and endpoint on the node.

use crate::ip::IpAddr128;

/// Key of `SL_CT`: the 5-tuple of a flow in the direction of its first packet.
/// Ports in network byte order; ICMP echo uses the identifier as `sport` and 0 as `dport`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct CtKey {
    pub src: IpAddr128,
    pub dst: IpAddr128,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

impl CtKey {
    /// The same flow seen from the other end.
    #[inline(always)]
    pub const fn reversed(&self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

/// Value of `SL_CT`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct CtEntry {
    /// Expiry, in seconds of `CLOCK_MONOTONIC` (`bpf_ktime_get_ns() / 1e9`). Entries past it
    /// are dead: the datapath treats them as absent and `sluiced` deletes them.
    pub expires: u32,
    /// `DatapathConfig::policy_gen` when policy last allowed this flow.
    pub policy_gen: u32,
    /// `CT_F_*`.
    pub flags: u32,
    pub _pad: u32,
}

/// The originator sent a SYN.
pub const CT_F_SYN: u32 = 1 << 0;
/// The responder answered (SYN-ACK or any reply packet): established.
pub const CT_F_ESTABLISHED: u32 = 1 << 1;
/// FIN seen from the originator.
pub const CT_F_FIN_FWD: u32 = 1 << 2;
/// FIN seen from the responder.
pub const CT_F_FIN_REV: u32 = 1 << 3;
/// RST seen: the flow is closing.
pub const CT_F_RST: u32 = 1 << 4;
/// A reply was seen (any protocol).
pub const CT_F_SEEN_REPLY: u32 = 1 << 5;
