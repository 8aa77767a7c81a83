//! One address pool (a pod CIDR of one family): which addresses may be handed out and which
//! are taken. Pure logic, no I/O.
//!
//! The first address after the network address is the pods' gateway (it lives on the node);
//! the network address and, for IPv4, the broadcast address are never handed out. Allocation
//! is next-fit: it continues after the last address handed out and wraps, so a released
//! address is not reused at once (a stale peer that still sends to it hits nobody for a while).

use std::{collections::BTreeSet, net::IpAddr};

use ipnetwork::IpNetwork;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error(
        "pod CIDR {0} is too small: it must leave room for a gateway and pods (IPv4 /30 or larger, IPv6 /126 or larger)"
    )]
    TooSmall(IpNetwork),
    #[error("{addr} is not in pod CIDR {cidr}")]
    Outside { addr: IpAddr, cidr: IpNetwork },
    #[error("{addr} is reserved in pod CIDR {cidr} (network, gateway or broadcast address)")]
    Reserved { addr: IpAddr, cidr: IpNetwork },
    #[error("{0} is already leased")]
    Taken(IpAddr),
    #[error("pod CIDR {0} has no free address left")]
    Exhausted(IpNetwork),
}

#[derive(Debug, Clone)]
pub struct Pool {
    cidr: IpNetwork,
    /// Offsets (from the network address) of addresses in use.
    used: BTreeSet<u128>,
    /// Offset of the last address handed out by `allocate_next`.
    cursor: u128,
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl Pool {
    pub fn new(cidr: IpNetwork) -> Result<Self, PoolError> {
        let cidr = IpNetwork::new(cidr.network(), cidr.prefix()).expect("valid prefix");
        let ok = match cidr {
            IpNetwork::V4(n) => n.prefix() <= 30,
            IpNetwork::V6(n) => n.prefix() <= 126,
        };
        if !ok {
            return Err(PoolError::TooSmall(cidr));
        }
        Ok(Self {
            cidr,
            used: BTreeSet::new(),
            cursor: 1,
        })
    }

    pub fn cidr(&self) -> IpNetwork {
        self.cidr
    }

    pub fn is_v4(&self) -> bool {
        self.cidr.is_ipv4()
    }

    fn host_bits(&self) -> u32 {
        match self.cidr {
            IpNetwork::V4(n) => 32 - n.prefix() as u32,
            IpNetwork::V6(n) => 128 - n.prefix() as u32,
        }
    }

    /// Offsets that can be handed out: `first..=last`.
    fn range(&self) -> (u128, u128) {
        let size_minus_one = if self.host_bits() == 128 {
            u128::MAX
        } else {
            (1u128 << self.host_bits()) - 1
        };
        // IPv4 loses its broadcast address; IPv6 has none.
        let last = if self.is_v4() {
            size_minus_one - 1
        } else {
            size_minus_one
        };
        (2, last)
    }

    fn addr_at(&self, off: u128) -> IpAddr {
        let base = to_u128(self.cidr.network());
        match self.cidr {
            IpNetwork::V4(_) => IpAddr::V4(((base + off) as u32).into()),
            IpNetwork::V6(_) => IpAddr::V6((base + off).into()),
        }
    }

    fn offset_of(&self, addr: IpAddr) -> Result<u128, PoolError> {
        if !self.cidr.contains(addr) {
            return Err(PoolError::Outside {
                addr,
                cidr: self.cidr,
            });
        }
        Ok(to_u128(addr) - to_u128(self.cidr.network()))
    }

    /// The pods' gateway: the first address after the network address.
    pub fn gateway(&self) -> IpAddr {
        self.addr_at(1)
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        self.cidr.contains(addr)
    }

    /// How many addresses pods can have in all.
    pub fn capacity(&self) -> u128 {
        let (first, last) = self.range();
        last - first + 1
    }

    pub fn used(&self) -> usize {
        self.used.len()
    }

    pub fn free(&self) -> u128 {
        self.capacity() - self.used.len() as u128
    }

    /// Hand out the next free address after the cursor (wrapping).
    pub fn allocate_next(&mut self) -> Result<IpAddr, PoolError> {
        if self.free() == 0 {
            return Err(PoolError::Exhausted(self.cidr));
        }
        let (first, last) = self.range();
        let mut off = if self.cursor >= last || self.cursor < first {
            first
        } else {
            self.cursor + 1
        };
        // There is a free address, so this ends within capacity steps; in practice the used
        // set is sparse after the cursor and it ends at once.
        while self.used.contains(&off) {
            off = if off >= last { first } else { off + 1 };
        }
        self.used.insert(off);
        self.cursor = off;
        Ok(self.addr_at(off))
    }

    /// Take a specific address (a static request, or a lease restored from the store).
    pub fn reserve(&mut self, addr: IpAddr) -> Result<(), PoolError> {
        let off = self.offset_of(addr)?;
        let (first, last) = self.range();
        if off < first || off > last {
            return Err(PoolError::Reserved {
                addr,
                cidr: self.cidr,
            });
        }
        if !self.used.insert(off) {
            return Err(PoolError::Taken(addr));
        }
        Ok(())
    }

    /// Give an address back. Returns whether it was in use.
    pub fn release(&mut self, addr: IpAddr) -> bool {
        match self.offset_of(addr) {
            Ok(off) => self.used.remove(&off),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    fn pool(s: &str) -> Pool {
        Pool::new(s.parse().unwrap()).unwrap()
    }

    #[test]
    fn v4_skips_network_gateway_and_broadcast() {
        let mut p = pool("10.244.1.0/29");
        assert_eq!(p.gateway().to_string(), "10.244.1.1");
        assert_eq!(p.capacity(), 5);
        let got: Vec<String> = (0..5).map(|_| p.allocate_next().unwrap().to_string()).collect();
        assert_eq!(
            got,
            [
                "10.244.1.2",
                "10.244.1.3",
                "10.244.1.4",
                "10.244.1.5",
                "10.244.1.6"
            ]
        );
        assert_eq!(p.allocate_next(), Err(PoolError::Exhausted(p.cidr())));
    }

    #[test]
    fn v6_has_no_broadcast() {
        let mut p = pool("fd00:10:244:1::/126");
        assert_eq!(p.gateway().to_string(), "fd00:10:244:1::1");
        assert_eq!(p.capacity(), 2);
        assert_eq!(p.allocate_next().unwrap().to_string(), "fd00:10:244:1::2");
        assert_eq!(p.allocate_next().unwrap().to_string(), "fd00:10:244:1::3");
        assert!(p.allocate_next().is_err());
    }

    #[test]
    fn huge_v6_pool_counts_without_overflow() {
        let p = pool("fd00::/64");
        assert_eq!(p.capacity(), (1u128 << 64) - 2);
        let p = pool("::/0");
        assert_eq!(p.capacity(), u128::MAX - 1);
    }

    #[test]
    fn next_fit_does_not_reuse_a_released_address_at_once() {
        let mut p = pool("10.0.0.0/24");
        let a = p.allocate_next().unwrap();
        assert!(p.release(a));
        let b = p.allocate_next().unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn wraps_around_to_freed_addresses() {
        let mut p = pool("10.0.0.0/29");
        let all: Vec<_> = (0..5).map(|_| p.allocate_next().unwrap()).collect();
        p.release(all[1]);
        assert_eq!(p.allocate_next().unwrap(), all[1]);
    }

    #[test]
    fn reserve_refuses_outside_reserved_and_taken() {
        let mut p = pool("10.0.0.0/24");
        assert!(matches!(
            p.reserve("10.0.1.5".parse().unwrap()),
            Err(PoolError::Outside { .. })
        ));
        assert!(matches!(
            p.reserve("10.0.0.1".parse().unwrap()),
            Err(PoolError::Reserved { .. })
        ));
        assert!(matches!(
            p.reserve("10.0.0.255".parse().unwrap()),
            Err(PoolError::Reserved { .. })
        ));
        assert!(matches!(
            p.reserve("10.0.0.0".parse().unwrap()),
            Err(PoolError::Reserved { .. })
        ));
        p.reserve("10.0.0.7".parse().unwrap()).unwrap();
        assert_eq!(
            p.reserve("10.0.0.7".parse().unwrap()),
            Err(PoolError::Taken("10.0.0.7".parse().unwrap()))
        );
    }

    #[test]
    fn too_small_pools_are_refused() {
        assert!(Pool::new("10.0.0.0/31".parse().unwrap()).is_err());
        assert!(Pool::new("fd00::/127".parse().unwrap()).is_err());
        assert!(Pool::new("10.0.0.0/30".parse().unwrap()).is_ok());
    }

    #[test]
    fn non_canonical_cidr_is_normalised() {
        let p = Pool::new("10.0.0.77/24".parse().unwrap()).unwrap();
        assert_eq!(p.cidr().to_string(), "10.0.0.0/24");
    }

    proptest! {
        /// Any interleaving of allocations and releases hands out each address at most once
        /// at a time, stays inside the pod range, and agrees with a model set.
        #[test]
        fn allocations_are_unique_and_in_range(ops in prop::collection::vec(any::<(bool, u8)>(), 1..400)) {
            let mut p = pool("10.9.0.0/26");
            let mut live: Vec<IpAddr> = Vec::new();
            let mut model: HashSet<IpAddr> = HashSet::new();
            for (alloc, pick) in ops {
                if alloc || live.is_empty() {
                    match p.allocate_next() {
                        Ok(a) => {
                            prop_assert!(model.insert(a), "{a} handed out twice");
                            prop_assert!(p.cidr().contains(a));
                            prop_assert!(a != p.gateway());
                            prop_assert!(a.to_string() != "10.9.0.0" && a.to_string() != "10.9.0.63");
                            live.push(a);
                        }
                        Err(PoolError::Exhausted(_)) => prop_assert_eq!(model.len() as u128, p.capacity()),
                        Err(e) => prop_assert!(false, "unexpected {e}"),
                    }
                } else {
                    let a = live.swap_remove(pick as usize % live.len());
                    prop_assert!(p.release(a));
                    model.remove(&a);
                }
                prop_assert_eq!(p.used(), model.len());
            }
        }
    }
}
