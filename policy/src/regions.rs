//! ipBlock regions. Every `ipBlock` (`cidr` minus `except`) of every policy cuts the address
//! space; the boundaries (each cidr and except prefix, plus the IPv4 and IPv6 roots) become
//! LPM prefixes. All addresses whose longest matching boundary is the same prefix lie in the
//! same set of ipBlocks, so one LPM lookup tells which ipBlocks an address is in:
//!
//! an address `x` whose longest match is `p` is inside block `b` exactly when `p` lies inside
//! `b.cidr` and inside none of `b.except`. (If `b.cidr` were narrower than `p` and held `x`, it
//! would be a longer match; likewise for an except.)

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use ipnetwork::IpNetwork;

/// One ipBlock, parsed. Invalid CIDRs make the block match nothing (it is dropped).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Block {
    pub cidr: IpNetwork,
    pub except: Vec<IpNetwork>,
}

/// `address/prefix`, strictly: a bare address or a signed prefix is not a CIDR.
fn parse_cidr(s: &str) -> Option<IpNetwork> {
    let (_, len) = s.split_once('/')?;
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().map(normalise)
}

impl Block {
    pub fn parse(cidr: &str, except: &[String]) -> Option<Self> {
        let cidr = parse_cidr(cidr)?;
        // An except entry that does not parse cannot be honoured: refuse the whole block
        // rather than allow more than the policy meant.
        let except = except.iter().map(|e| parse_cidr(e)).collect::<Option<Vec<_>>>()?;
        Some(Self { cidr, except })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.cidr.contains(ip) && !self.except.iter().any(|e| e.contains(ip))
    }
}

/// The network address with host bits cleared.
pub fn normalise(n: IpNetwork) -> IpNetwork {
    IpNetwork::new(n.network(), n.prefix()).expect("same prefix")
}

/// `inner` lies inside `outer` (same family).
pub fn within(inner: &IpNetwork, outer: &IpNetwork) -> bool {
    inner.is_ipv4() == outer.is_ipv4() && inner.prefix() >= outer.prefix() && outer.contains(inner.network())
}

/// The cut of the address space by a set of blocks.
pub struct Regions {
    /// Every boundary prefix, each with the set of blocks (indexes into `blocks`) it lies in.
    pub prefixes: Vec<(IpNetwork, BTreeSet<usize>)>,
    pub blocks: Vec<Block>,
    /// Boundary prefix -> its index in `prefixes` (longest-match lookups walk prefix lengths).
    index: HashMap<IpNetwork, usize>,
}

/// `p` shortened to `len` bits.
fn ancestor(p: &IpNetwork, len: u8) -> IpNetwork {
    normalise(IpNetwork::new(p.network(), len).expect("shorter prefix is valid"))
}

impl Regions {
    /// Linear in the number of boundaries times the address width: the blocks holding a
    /// boundary are found among its ancestors, not by testing every block.
    pub fn new(blocks: Vec<Block>) -> Self {
        let mut boundaries: BTreeSet<IpNetwork> = BTreeSet::new();
        boundaries.insert("0.0.0.0/0".parse().expect("literal"));
        boundaries.insert("::/0".parse().expect("literal"));
        let mut by_cidr: HashMap<IpNetwork, Vec<usize>> = HashMap::new();
        for (i, b) in blocks.iter().enumerate() {
            boundaries.insert(b.cidr);
            boundaries.extend(b.except.iter().copied());
            by_cidr.entry(b.cidr).or_default().push(i);
        }
        let prefixes: Vec<(IpNetwork, BTreeSet<usize>)> = boundaries
            .into_iter()
            .map(|p| {
                let mut inside = BTreeSet::new();
                for len in 0..=p.prefix() {
                    let Some(bs) = by_cidr.get(&ancestor(&p, len)) else {
                        continue;
                    };
                    for &i in bs {
                        if !blocks[i].except.iter().any(|e| within(&p, e)) {
                            inside.insert(i);
                        }
                    }
                }
                (p, inside)
            })
            .collect();
        let index = prefixes.iter().enumerate().map(|(i, (p, _))| (*p, i)).collect();
        Self {
            prefixes,
            blocks,
            index,
        }
    }

    /// The blocks an address is in (by longest match, as the datapath will find it).
    pub fn of(&self, ip: IpAddr) -> BTreeSet<usize> {
        let host = IpNetwork::new(ip, if ip.is_ipv4() { 32 } else { 128 }).expect("host prefix");
        (0..=host.prefix())
            .rev()
            .find_map(|len| self.index.get(&ancestor(&host, len)))
            .map(|i| self.prefixes[*i].1.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn block(c: &str, ex: &[&str]) -> Block {
        Block::parse(c, &ex.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn except_is_carved_out_and_families_stay_apart() {
        let r = Regions::new(vec![block("10.0.0.0/8", &["10.1.0.0/16"]), block("::/0", &[])]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(r.of(ip("10.2.3.4")), [0].into());
        assert!(r.of(ip("10.1.3.4")).is_empty());
        assert!(r.of(ip("11.0.0.1")).is_empty());
        assert_eq!(r.of(ip("fd00::1")), [1].into(), "::/0 holds IPv6 ...");
        assert!(!r.of(ip("1.2.3.4")).contains(&1), "... but no IPv4");
    }

    #[test]
    fn bad_cidrs_drop_the_block() {
        assert!(Block::parse("10.0.0.0/33", &[]).is_none());
        assert!(Block::parse("10.0.0.0/8", &["nope".into()]).is_none());
    }

    fn arb_block() -> impl Strategy<Value = Block> {
        (
            any::<[u8; 2]>(),
            4u8..=24,
            prop::collection::vec((any::<[u8; 2]>(), 8u8..=28), 0..3),
        )
            .prop_map(|(a, len, ex)| {
                let cidr = normalise(format!("10.{}.{}.0/{len}", a[0] % 4, a[1]).parse().unwrap());
                let except = ex
                    .into_iter()
                    .map(|(e, l)| normalise(format!("10.{}.{}.0/{l}", e[0] % 4, e[1]).parse().unwrap()))
                    .collect();
                Block { cidr, except }
            })
    }

    proptest! {
        /// The longest-match answer equals asking every block directly.
        #[test]
        fn regions_agree_with_blocks(blocks in prop::collection::vec(arb_block(), 1..6), probe in any::<[u8; 3]>()) {
            let ip: IpAddr = format!("10.{}.{}.{}", probe[0] % 4, probe[1], probe[2]).parse().unwrap();
            let r = Regions::new(blocks.clone());
            let direct: BTreeSet<usize> = blocks.iter().enumerate().filter(|(_, b)| b.contains(ip)).map(|(i, _)| i).collect();
            prop_assert_eq!(r.of(ip), direct);
        }
    }
}
