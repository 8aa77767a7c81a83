//! Ports of a rule, as the datapath sees them: a protocol and a set of port prefixes (a range
//! `port..=endPort` becomes the few aligned blocks that cover it exactly, so one LPM lookup
//! answers "is this port in the range").

use k8s_openapi::{api::networking::v1::NetworkPolicyPort, apimachinery::pkg::util::intstr::IntOrString};

use crate::model::{ContainerPort, Protocol};

/// Ports `value..value + 2^(16 - len)`: `len` leading bits of `value` fixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortPrefix {
    pub value: u16,
    pub len: u8,
}

impl PortPrefix {
    pub fn contains(&self, port: u16) -> bool {
        if self.len == 0 {
            return true;
        }
        let shift = 16 - self.len as u32;
        (port >> shift) == (self.value >> shift)
    }
}

/// What one `ports` entry allows: a protocol and port prefixes (an empty list: every port).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortMatch {
    pub protocol: Protocol,
    /// Empty: all ports of the protocol.
    pub prefixes: Vec<PortPrefix>,
}

/// The aligned prefixes that cover `lo..=hi` exactly (at most 30 for 16 bits).
pub fn range_prefixes(lo: u16, hi: u16) -> Vec<PortPrefix> {
    let mut out = Vec::new();
    if lo > hi {
        return out;
    }
    let (mut lo, hi) = (lo as u32, hi as u32);
    while lo <= hi {
        // The largest block starting at `lo` that is aligned and fits before `hi`.
        let mut size = if lo == 0 {
            1u32 << 16
        } else {
            1u32 << lo.trailing_zeros().min(16)
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        out.push(PortPrefix {
            value: lo as u16,
            len: (16 - size.trailing_zeros()) as u8,
        });
        lo += size;
    }
    out
}

/// Resolve one `ports` entry against the destination's container ports (named ports are the
/// destination pod's; `None` when the destination is not a pod). `None`: matches nothing.
pub fn resolve(p: &NetworkPolicyPort, dest_ports: Option<&[ContainerPort]>) -> Option<PortMatch> {
    let protocol = Protocol::from_api(p.protocol.as_deref())?;
    let prefixes = match (&p.port, p.end_port) {
        (None, _) => Vec::new(),
        (Some(IntOrString::Int(port)), end) => {
            let lo = u16::try_from(*port).ok().filter(|p| *p > 0)?;
            let hi = match end {
                Some(e) => u16::try_from(e).ok()?,
                None => lo,
            };
            let v = range_prefixes(lo, hi);
            if v.is_empty() {
                return None;
            }
            v
        }
        (Some(IntOrString::String(name)), None) => {
            if name.is_empty() {
                return None;
            }
            // The API keeps container port names unique within a pod; objects from a
            // manifests directory are not validated, so a repeated name matches each port
            // that carries it (as the reference evaluator reads "a named port on a pod").
            let mut ports: Vec<u16> = dest_ports?
                .iter()
                .filter(|c| c.name.as_deref() == Some(name.as_str()) && c.protocol == protocol)
                .map(|c| c.port)
                .collect();
            ports.sort_unstable();
            ports.dedup();
            if ports.is_empty() {
                return None;
            }
            ports
                .into_iter()
                .map(|value| PortPrefix { value, len: 16 })
                .collect()
        }
        // endPort needs a numeric port.
        (Some(IntOrString::String(_)), Some(_)) => return None,
    };
    Some(PortMatch { protocol, prefixes })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn known_decompositions() {
        assert_eq!(range_prefixes(80, 80), vec![PortPrefix { value: 80, len: 16 }]);
        assert_eq!(range_prefixes(0, 65535), vec![PortPrefix { value: 0, len: 0 }]);
        assert_eq!(
            range_prefixes(8000, 8007),
            vec![PortPrefix { value: 8000, len: 13 }]
        );
        assert_eq!(range_prefixes(1, 65535).len(), 16);
        assert!(range_prefixes(10, 9).is_empty());
    }

    proptest! {
        /// The prefixes cover exactly lo..=hi, without overlap, in at most 30 pieces.
        #[test]
        fn decomposition_is_exact(a in any::<u16>(), b in any::<u16>(), probe in any::<u16>()) {
            let (lo, hi) = (a.min(b), a.max(b));
            let ps = range_prefixes(lo, hi);
            prop_assert!(ps.len() <= 30);
            let hits = ps.iter().filter(|p| p.contains(probe)).count();
            prop_assert_eq!(hits, usize::from(probe >= lo && probe <= hi));
            for p in [lo, hi] {
                prop_assert_eq!(ps.iter().filter(|x| x.contains(p)).count(), 1);
            }
        }
    }
}
