//! NetworkPolicy as the datapath sees it: numeric identities and an LPM trie of allowed
//! (local pod identity, peer identity, direction, protocol, port-prefix) tuples. Entries are
//! keyed by the local pod's identity, not its endpoint: pods alike share their entries.
//!
//! Every entry allows; absence denies. Because entries only ever allow, any matching prefix is
//! a correct answer, so one longest-prefix lookup decides, whatever the number of rules. Port
//! ranges (`endPort`) are split into at most 30 aligned prefixes by the compiler; a rule with no
//! ports is a prefix that stops before the protocol byte (every protocol, every port).

/// Identity 0: wildcard peer ("from/to everywhere": a rule with no peers). Looked up second.
pub const IDENTITY_ANY: u32 = 0;
/// The node itself (its gateway addresses): ingress from it is always allowed (kubelet probes).
pub const IDENTITY_HOST: u32 = 1;
/// Anything the ipcache does not know (outside every ipBlock and not a known pod).
pub const IDENTITY_WORLD: u32 = 2;
/// A local endpoint whose Pod object is not known yet: labels are empty.
pub const IDENTITY_FIRST_DYNAMIC: u32 = 256;

/// Data part of a `SL_POLICY` LPM trie key. All fields big-endian bytes so that prefixes run
/// from the endpoint down to the port bits.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct PolicyKeyData {
    /// The local pod's identity (`LocalEndpoint::identity` of the address in the packet), big-endian.
    pub subject: [u8; 4],
    /// Peer identity, big-endian (`IDENTITY_ANY` for wildcard rules).
    pub identity: [u8; 4],
    /// `direction::INGRESS` or `direction::EGRESS`.
    pub direction: u8,
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP).
    pub proto: u8,
    /// Destination port, big-endian.
    pub dport: [u8; 2],
}

/// Bits of `PolicyKeyData` up to and including the direction: an entry with this prefix length
/// allows every protocol and port.
pub const POLICY_PREFIX_ALL_PROTOS: u32 = 72;
/// Up to and including the protocol: every port of one protocol.
pub const POLICY_PREFIX_ALL_PORTS: u32 = 80;
/// The whole key: one exact port.
pub const POLICY_PREFIX_FULL: u32 = 96;

impl PolicyKeyData {
    #[inline(always)]
    pub const fn new(subject: u32, identity: u32, direction: u8, proto: u8, dport: u16) -> Self {
        Self {
            subject: subject.to_be_bytes(),
            identity: identity.to_be_bytes(),
            direction,
            proto,
            dport: dport.to_be_bytes(),
        }
    }
}

/// Value of `SL_POLICY`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct PolicyValue {
    /// `POLICY_F_*`.
    pub flags: u32,
    /// Index of one policy that contributed this entry (for verdict events), `u32::MAX` if none.
    pub policy_ref: u32,
}

pub const POLICY_F_ALLOW: u32 = 1;
