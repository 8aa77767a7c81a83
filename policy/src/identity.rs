//! Security identities: numbers that stand for "everything policy can tell about an address".
//! Two addresses with the same identity are treated alike by every selector and every
//! ipBlock, so policy entries are written per identity, not per address: pods of one
//! Deployment share one identity, and so do all addresses of one ipBlock region.
//!
//! Numbers are stable while their key is in use (the allocator outlives compilations), so a
//! recompilation after an unrelated change rewrites nothing.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use crate::{
    model::{ContainerPort, Labels},
    regions::Block,
};

/// Reserved: the wildcard peer of rules without `from`/`to` (mirrors the datapath ABI).
pub const IDENTITY_ANY: u32 = 0;
/// First number handed out.
pub const FIRST_DYNAMIC: u32 = 256;

/// What an identity stands for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdentityKey {
    /// Pods with these attributes: the namespace and labels (for selectors), the container
    /// ports (for named ports of egress rules) and the ipBlocks their addresses are in.
    Pod {
        namespace: String,
        labels: Labels,
        ports: Vec<ContainerPort>,
        blocks: Vec<Block>,
    },
    /// Addresses that are not pods (the world, other nodes, this node), by the ipBlocks they
    /// are in. (Block lists are sorted and deduplicated: a set, without a B-tree node each.)
    Addresses { blocks: Vec<Block> },
}

impl IdentityKey {
    pub fn blocks(&self) -> &[Block] {
        match self {
            Self::Pod { blocks, .. } | Self::Addresses { blocks } => blocks,
        }
    }
}

/// The identity numbers in use and what they stand for. Keys are shared (`Arc`) with the
/// compilation results, not copied.
#[derive(Debug, Default)]
pub struct Identities {
    by_key: HashMap<Arc<IdentityKey>, u32>,
    next: u32,
}

impl Identities {
    /// The number for `key`, allocating one if it is new.
    pub fn get(&mut self, key: IdentityKey) -> (u32, Arc<IdentityKey>) {
        if let Some((k, id)) = self.by_key.get_key_value(&key) {
            return (*id, k.clone());
        }
        if self.next < FIRST_DYNAMIC {
            self.next = FIRST_DYNAMIC;
        }
        let id = self.next;
        self.next = self.next.checked_add(1).unwrap_or(FIRST_DYNAMIC);
        let key = Arc::new(key);
        self.by_key.insert(key.clone(), id);
        (id, key)
    }

    /// Forget every key not in `used` (after a compilation).
    pub fn retain(&mut self, used: &HashSet<u32>) {
        self.by_key.retain(|_, id| used.contains(id));
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}
