//! NetworkPolicy in the daemon: the engine that turns the cluster model (from [`manifests`] or
//! the API server, [`kube`]) and this node's endpoints into datapath map entries, and keeps
//! the maps equal to the latest compilation by writing only differences.
//!
//! Order of a change, so that no packet sees a state looser than both the old and the new
//! policy allow together: new allow entries and ipcache entries first, then endpoint
//! identities and isolation flags, then the policy generation (established flows re-check),
//! then removal of what no longer applies.

pub mod explain;
pub mod kube;
pub mod manifests;

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    time::Instant,
};

use aya::maps::lpm_trie::Key;
use sluice_api::{ApiError, ErrorKind};
use sluice_common::{
    direction,
    endpoint::{EP_F_EGRESS_ISOLATED, EP_F_INGRESS_ISOLATED, IPINFO_F_HOST, IpInfo},
    ip::IpPrefixData,
    policy::{POLICY_F_ALLOW, POLICY_PREFIX_ALL_PORTS, POLICY_PREFIX_ALL_PROTOS, PolicyKeyData, PolicyValue},
};
use sluice_policy::{
    compile::{self, Compiled, Direction, EntryKey, Input, LocalEndpoint},
    identity::Identities,
    manifests::Objects,
};

use crate::{datapath::maps::DatapathMaps, node::api_err};

type RawPolicyKey = (u32, [u8; 12]);
type RawIpKey = (u32, [u8; 16]);

fn raw_policy(k: &Key<PolicyKeyData>) -> RawPolicyKey {
    let d = k.data();
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&d.subject);
    b[4..8].copy_from_slice(&d.identity);
    b[8] = d.direction;
    b[9] = d.proto;
    b[10..].copy_from_slice(&d.dport);
    (k.prefix_len(), b)
}

fn policy_key(raw: &RawPolicyKey) -> Key<PolicyKeyData> {
    let b = raw.1;
    Key::new(
        raw.0,
        PolicyKeyData {
            subject: [b[0], b[1], b[2], b[3]],
            identity: [b[4], b[5], b[6], b[7]],
            direction: b[8],
            proto: b[9],
            dport: [b[10], b[11]],
        },
    )
}

/// The datapath form of a compiled entry.
fn entry_to_raw(e: &EntryKey) -> RawPolicyKey {
    let dir = match e.direction {
        Direction::Ingress => direction::INGRESS,
        Direction::Egress => direction::EGRESS,
    };
    let (len, proto, port) = match e.proto {
        None => (POLICY_PREFIX_ALL_PROTOS, 0, 0),
        Some(p) => (POLICY_PREFIX_ALL_PORTS + e.port.len as u32, p, e.port.value),
    };
    raw_policy(&Key::new(
        len,
        PolicyKeyData::new(e.subject, e.identity, dir, proto, port),
    ))
}

/// Figures of the last apply (for logs, status and metrics).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ApplyStats {
    pub compile_ms: f64,
    pub apply_ms: f64,
    pub entries: usize,
    pub entries_added: usize,
    pub entries_removed: usize,
    pub ipcache: usize,
    pub identities: usize,
    pub policies: usize,
    pub generation: u32,
}

pub struct PolicyEngine {
    pub objects: Objects,
    ids: Identities,
    pub compiled: Compiled,
    applied_entries: HashMap<RawPolicyKey, (u32, u32)>,
    applied_ipcache: HashMap<RawIpKey, (u32, u32)>,
    pub stats: ApplyStats,
}

impl PolicyEngine {
    /// Start from what the (possibly re-adopted) maps hold, so the first apply removes
    /// leftovers and rewrites nothing that is already right.
    pub fn new(maps: &DatapathMaps, objects: Objects) -> Self {
        let applied_entries = maps
            .policy_entries()
            .iter()
            .map(|(k, v)| (raw_policy(k), (v.flags, v.policy_ref)))
            .collect();
        let applied_ipcache = maps
            .ipcache_entries()
            .iter()
            .map(|(k, v)| ((k.prefix_len(), k.data().bytes), (v.identity, v.flags)))
            .collect();
        Self {
            objects,
            ids: Identities::default(),
            compiled: Compiled::default(),
            applied_entries,
            applied_ipcache,
            stats: ApplyStats::default(),
        }
    }

    /// Compile for `endpoints` and bring the maps in line. On a capacity error nothing is
    /// written and the previous state stays in force.
    pub fn apply(
        &mut self,
        maps: &DatapathMaps,
        endpoints: &[LocalEndpoint],
        node_ips: &[IpAddr],
    ) -> Result<&ApplyStats, ApiError> {
        let t0 = Instant::now();
        let compiled = compile::compile(
            &Input {
                state: &self.objects.state,
                endpoints,
                node_ips,
            },
            &mut self.ids,
        );
        let compile_ms = t0.elapsed().as_secs_f64() * 1e3;
        let t1 = Instant::now();
        let dp = |e: crate::datapath::DatapathError| api_err(ErrorKind::Datapath, crate::node::chain(&e));

        let want_entries: HashMap<RawPolicyKey, (u32, u32)> = compiled
            .entries
            .iter()
            .map(|(k, pref)| (entry_to_raw(k), (POLICY_F_ALLOW, *pref)))
            .collect();
        let want_ipcache: HashMap<RawIpKey, (u32, u32)> = compiled
            .ipcache
            .iter()
            .map(|(net, e)| {
                let k = crate::datapath::maps::prefix_key(*net);
                (
                    (k.prefix_len(), k.data().bytes),
                    (e.identity, if e.host { IPINFO_F_HOST } else { 0 }),
                )
            })
            .collect();
        if want_entries.len() > maps.sizes.policy as usize {
            return Err(api_err(
                ErrorKind::PolicyCapacity,
                format!(
                    "policy needs {} entries, SL_POLICY holds {} (--max-policy-entries): keeping the previous policy",
                    want_entries.len(),
                    maps.sizes.policy
                ),
            ));
        }
        if want_ipcache.len() > maps.sizes.ipcache as usize {
            return Err(api_err(
                ErrorKind::PolicyCapacity,
                format!(
                    "policy needs {} ipcache entries, SL_IPCACHE holds {} (--max-ipcache): keeping the previous policy",
                    want_ipcache.len(),
                    maps.sizes.ipcache
                ),
            ));
        }
        let mut changed = false;
        let mut added = 0;
        // 1. New and changed entries.
        for (k, v) in &want_ipcache {
            if self.applied_ipcache.get(k) != Some(v) {
                maps.ipcache_insert(
                    &Key::new(k.0, IpPrefixData { bytes: k.1 }),
                    &IpInfo {
                        identity: v.0,
                        flags: v.1,
                    },
                )
                .map_err(dp)?;
                self.applied_ipcache.insert(*k, *v);
                changed = true;
            }
        }
        for (k, v) in &want_entries {
            if self.applied_entries.get(k) != Some(v) {
                maps.policy_insert(
                    &policy_key(k),
                    &PolicyValue {
                        flags: v.0,
                        policy_ref: v.1,
                    },
                )
                .map_err(dp)?;
                self.applied_entries.insert(*k, *v);
                added += 1;
                changed = true;
            }
        }
        // 2. Endpoints' identities and isolation.
        for ep in endpoints {
            let Some(p) = compiled.endpoints.get(&ep.ep_id) else {
                continue;
            };
            let Some(ifindex) = ep_ifindex(maps, ep) else {
                continue;
            };
            let mut iso = 0;
            if p.ingress_isolated {
                iso |= EP_F_INGRESS_ISOLATED;
            }
            if p.egress_isolated {
                iso |= EP_F_EGRESS_ISOLATED;
            }
            let ids: Vec<(IpAddr, u32)> = p.identities.iter().map(|(ip, id)| (*ip, *id)).collect();
            changed |= maps.update_endpoint_policy(ifindex, &ids, iso).map_err(dp)?;
        }
        // 3. Flows established under the old policy re-check on their next packet.
        let removed_entries: Vec<RawPolicyKey> = self
            .applied_entries
            .keys()
            .filter(|k| !want_entries.contains_key(k))
            .copied()
            .collect();
        let removed_ipcache: Vec<RawIpKey> = self
            .applied_ipcache
            .keys()
            .filter(|k| !want_ipcache.contains_key(k))
            .copied()
            .collect();
        changed |= !removed_entries.is_empty() || !removed_ipcache.is_empty();
        if changed {
            maps.update_config(|c| c.policy_gen = c.policy_gen.wrapping_add(1).max(1))
                .map_err(dp)?;
        }
        // 4. What no longer applies.
        for k in &removed_entries {
            maps.policy_remove(&policy_key(k)).map_err(dp)?;
            self.applied_entries.remove(k);
        }
        for k in &removed_ipcache {
            maps.ipcache_remove(&Key::new(k.0, IpPrefixData { bytes: k.1 }))
                .map_err(dp)?;
            self.applied_ipcache.remove(k);
        }
        self.stats = ApplyStats {
            compile_ms,
            apply_ms: t1.elapsed().as_secs_f64() * 1e3,
            entries: want_entries.len(),
            entries_added: added,
            entries_removed: removed_entries.len(),
            ipcache: want_ipcache.len(),
            identities: compiled.identities.len(),
            policies: self.objects.state.policies.len(),
            generation: maps.config().policy_gen,
        };
        self.compiled = compiled;
        if changed {
            tracing::debug!(stats = ?self.stats, "policy applied");
        }
        Ok(&self.stats)
    }

    /// Isolation flags for a new endpoint (used when it is first written to the maps).
    pub fn endpoint_flags(&self, ep_id: u32) -> (u32, BTreeMap<IpAddr, u32>) {
        match self.compiled.endpoints.get(&ep_id) {
            Some(p) => {
                let mut f = 0;
                if p.ingress_isolated {
                    f |= EP_F_INGRESS_ISOLATED;
                }
                if p.egress_isolated {
                    f |= EP_F_EGRESS_ISOLATED;
                }
                (f, p.identities.clone())
            }
            None => (0, BTreeMap::new()),
        }
    }
}

fn ep_ifindex(maps: &DatapathMaps, ep: &LocalEndpoint) -> Option<u32> {
    ep.ips
        .iter()
        .find_map(|ip| maps.endpoint_by_ip(*ip))
        .map(|e| e.ifindex)
}
