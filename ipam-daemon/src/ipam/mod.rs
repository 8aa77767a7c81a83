//! Address management: the node's pod CIDRs (at most one per family) and the leases held by
//! attachments. Pure logic; `crate::node` persists every change before acknowledging it.

mod pool;

use std::{collections::HashMap, net::IpAddr};

use ipnetwork::IpNetwork;
pub use pool::{Pool, PoolError};
use sluice_api::{Attachment, IpAssignment, PodRef};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("{0} is not in any pod CIDR of this node")]
    NoPool(IpAddr),
    #[error("{addr} is leased to {holder}")]
    HeldBy { addr: IpAddr, holder: Attachment },
    #[error("more than one {family} address requested")]
    TwoOfAFamily { family: &'static str },
    #[error("{attachment} already holds {held:?}, not the requested {requested:?}")]
    Conflict {
        attachment: Attachment,
        held: Vec<IpAddr>,
        requested: Vec<IpAddr>,
    },
    #[error("pod CIDRs {0} and {1} are of the same family: give at most one IPv4 and one IPv6 CIDR")]
    SameFamily(IpNetwork, IpNetwork),
    #[error("no pod CIDR configured")]
    NoCidr,
}

impl IpamError {
    pub fn is_exhausted(&self) -> bool {
        matches!(self, Self::Pool(PoolError::Exhausted(_)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ips: Vec<IpAddr>,
    pub pod: Option<PodRef>,
    pub allocated_at: u64,
}

#[derive(Debug)]
pub struct Ipam {
    pools: Vec<Pool>,
    leases: HashMap<Attachment, Lease>,
    owners: HashMap<IpAddr, Attachment>,
}

impl Ipam {
    pub fn new(cidrs: &[IpNetwork]) -> Result<Self, IpamError> {
        if cidrs.is_empty() {
            return Err(IpamError::NoCidr);
        }
        let mut pools: Vec<Pool> = Vec::new();
        for c in cidrs {
            if let Some(other) = pools.iter().find(|p| p.is_v4() == c.is_ipv4()) {
                return Err(IpamError::SameFamily(other.cidr(), *c));
            }
            pools.push(Pool::new(*c)?);
        }
        // IPv4 first: results list the IPv4 address first, as runtimes expect.
        pools.sort_by_key(|p| !p.is_v4());
        Ok(Self {
            pools,
            leases: HashMap::new(),
            owners: HashMap::new(),
        })
    }

    pub fn pools(&self) -> &[Pool] {
        &self.pools
    }

    fn pool_of(&mut self, ip: IpAddr) -> Option<&mut Pool> {
        self.pools.iter_mut().find(|p| p.contains(ip))
    }

    /// Re-establish a lease read from the store. Addresses outside today's pod CIDRs (the
    /// pool was resized) stay leased to their pod but are not managed by a pool; returns them.
    pub fn restore(&mut self, attachment: Attachment, lease: Lease) -> Vec<IpAddr> {
        let mut outside = Vec::new();
        for ip in &lease.ips {
            match self.pool_of(*ip) {
                Some(p) => {
                    if let Err(e) = p.reserve(*ip) {
                        tracing::warn!(%ip, %attachment, error = %e, "restored lease conflicts");
                    }
                }
                None => outside.push(*ip),
            }
            self.owners.insert(*ip, attachment.clone());
        }
        self.leases.insert(attachment, lease);
        outside
    }

    #[cfg(test)]
    pub fn lease(&self, a: &Attachment) -> Option<&Lease> {
        self.leases.get(a)
    }

    pub fn leases(&self) -> impl Iterator<Item = (&Attachment, &Lease)> {
        self.leases.iter()
    }

    #[cfg(test)]
    pub fn owner(&self, ip: IpAddr) -> Option<&Attachment> {
        self.owners.get(&ip)
    }

    /// Lease one address per pool to `a`, honouring `requested` addresses. Idempotent for an
    /// attachment that already holds a lease. On error nothing changes. Returns the lease and
    /// whether it is new.
    pub fn allocate(
        &mut self,
        a: &Attachment,
        pod: Option<PodRef>,
        requested: &[IpAddr],
        now: u64,
    ) -> Result<(Lease, bool), IpamError> {
        if let Some(l) = self.leases.get(a) {
            if requested.iter().all(|r| l.ips.contains(r)) {
                return Ok((l.clone(), false));
            }
            return Err(IpamError::Conflict {
                attachment: a.clone(),
                held: l.ips.clone(),
                requested: requested.to_vec(),
            });
        }
        for fam in [true, false] {
            if requested.iter().filter(|r| r.is_ipv4() == fam).count() > 1 {
                return Err(IpamError::TwoOfAFamily {
                    family: if fam { "IPv4" } else { "IPv6" },
                });
            }
        }
        for r in requested {
            if !self.pools.iter().any(|p| p.contains(*r)) {
                return Err(IpamError::NoPool(*r));
            }
            if let Some(holder) = self.owners.get(r) {
                return Err(IpamError::HeldBy {
                    addr: *r,
                    holder: holder.clone(),
                });
            }
        }
        let mut got: Vec<IpAddr> = Vec::new();
        let mut result = Ok(());
        for i in 0..self.pools.len() {
            let pool = &mut self.pools[i];
            let want = requested.iter().find(|r| pool.contains(**r));
            let r = match want {
                Some(ip) => pool.reserve(*ip).map(|()| *ip),
                None => pool.allocate_next(),
            };
            match r {
                Ok(ip) => got.push(ip),
                Err(e) => {
                    result = Err(IpamError::from(e));
                    break;
                }
            }
        }
        if let Err(e) = result {
            for ip in got {
                if let Some(p) = self.pool_of(ip) {
                    p.release(ip);
                }
            }
            return Err(e);
        }
        for ip in &got {
            self.owners.insert(*ip, a.clone());
        }
        let lease = Lease {
            ips: got,
            pod,
            allocated_at: now,
        };
        self.leases.insert(a.clone(), lease.clone());
        Ok((lease, true))
    }

    /// Undo an `allocate` that was not persisted.
    pub fn forget(&mut self, a: &Attachment) {
        self.release(a);
    }

    /// Release an attachment's addresses. Returns them (empty when it held none).
    pub fn release(&mut self, a: &Attachment) -> Vec<IpAddr> {
        let Some(lease) = self.leases.remove(a) else {
            return Vec::new();
        };
        for ip in &lease.ips {
            if let Some(p) = self.pool_of(*ip) {
                p.release(*ip);
            }
            self.owners.remove(ip);
        }
        lease.ips
    }

    /// How the pod must be configured for these addresses.
    pub fn assignments(&self, ips: &[IpAddr]) -> Vec<IpAssignment> {
        ips.iter()
            .map(|ip| {
                let pool = self.pools.iter().find(|p| p.contains(*ip));
                IpAssignment {
                    address: *ip,
                    pool_prefix_len: pool.map(|p| p.cidr().prefix()).unwrap_or(if ip.is_ipv4() {
                        32
                    } else {
                        128
                    }),
                    gateway: pool.map(|p| p.gateway()).unwrap_or(*ip),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att(id: &str) -> Attachment {
        Attachment {
            container_id: id.into(),
            ifname: "eth0".into(),
        }
    }

    fn ipam(cidrs: &[&str]) -> Ipam {
        Ipam::new(&cidrs.iter().map(|c| c.parse().unwrap()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn dual_stack_gives_one_of_each_v4_first() {
        let mut i = ipam(&["fd00:1::/64", "10.1.0.0/24"]);
        let (l, new) = i.allocate(&att("a"), None, &[], 0).unwrap();
        assert!(new);
        assert_eq!(l.ips.len(), 2);
        assert!(l.ips[0].is_ipv4() && l.ips[1].is_ipv6());
        let asg = i.assignments(&l.ips);
        assert_eq!(asg[0].gateway.to_string(), "10.1.0.1");
        assert_eq!(asg[1].gateway.to_string(), "fd00:1::1");
    }

    #[test]
    fn allocate_is_idempotent_per_attachment() {
        let mut i = ipam(&["10.1.0.0/24"]);
        let (a, _) = i.allocate(&att("a"), None, &[], 0).unwrap();
        let (b, new) = i.allocate(&att("a"), None, &[], 0).unwrap();
        assert_eq!(a, b);
        assert!(!new);
    }

    #[test]
    fn static_requests() {
        let mut i = ipam(&["10.1.0.0/24"]);
        let want: IpAddr = "10.1.0.50".parse().unwrap();
        let (l, _) = i.allocate(&att("a"), None, &[want], 0).unwrap();
        assert_eq!(l.ips, vec![want]);
        assert!(matches!(
            i.allocate(&att("b"), None, &[want], 0),
            Err(IpamError::HeldBy { .. })
        ));
        assert!(matches!(
            i.allocate(&att("b"), None, &["10.2.0.5".parse().unwrap()], 0),
            Err(IpamError::NoPool(_))
        ));
        assert!(matches!(
            i.allocate(&att("b"), None, &["10.1.0.1".parse().unwrap()], 0),
            Err(IpamError::Pool(PoolError::Reserved { .. }))
        ));
        assert!(matches!(
            i.allocate(&att("a"), None, &["10.1.0.51".parse().unwrap()], 0),
            Err(IpamError::Conflict { .. })
        ));
    }

    #[test]
    fn exhaustion_leaves_no_partial_lease() {
        // v4 pool of 1 address, v6 pool roomy: the second dual-stack allocation must fail
        // without keeping its v6 address.
        let mut i = ipam(&["10.1.0.0/30", "fd00::/64"]);
        i.allocate(&att("a"), None, &[], 0).unwrap();
        let before = i.pools()[1].used();
        let e = i.allocate(&att("b"), None, &[], 0).unwrap_err();
        assert!(e.is_exhausted());
        assert_eq!(i.pools()[1].used(), before);
        assert!(i.lease(&att("b")).is_none());
    }

    #[test]
    fn release_then_restore_after_resize() {
        let mut i = ipam(&["10.1.0.0/24"]);
        let (l, _) = i.allocate(&att("a"), None, &[], 0).unwrap();
        assert_eq!(i.release(&att("a")), l.ips);
        assert!(i.release(&att("a")).is_empty());
        // A lease restored into a node whose CIDR no longer covers it is kept, not pooled.
        let mut j = ipam(&["10.2.0.0/24"]);
        let outside = j.restore(att("old"), l.clone());
        assert_eq!(outside, l.ips);
        assert_eq!(j.owner(l.ips[0]), Some(&att("old")));
        // Growing the CIDR keeps restored leases reserved.
        let mut k = ipam(&["10.1.0.0/23"]);
        assert!(k.restore(att("old"), l.clone()).is_empty());
        assert!(matches!(
            k.allocate(&att("b"), None, &l.ips, 0),
            Err(IpamError::HeldBy { .. })
        ));
    }

    #[test]
    fn two_cidrs_of_one_family_are_refused() {
        assert!(Ipam::new(&["10.0.0.0/24".parse().unwrap(), "10.1.0.0/24".parse().unwrap()]).is_err());
    }
}
