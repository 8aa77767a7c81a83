//! The policy compiler: from the cluster model and this node's endpoints to what the datapath
//! looks up per new flow: each local endpoint's identity and isolation, the ipcache (address
//! prefix → identity) and the allow entries (endpoint, peer identity, direction, protocol, port
//! prefix). Per-packet cost is then independent of the number of policies and rules.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use ipnetwork::IpNetwork;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};

use crate::{
    identity::{IDENTITY_ANY, Identities, IdentityKey},
    model::{ClusterState, ContainerPort, Labels, PodInfo, Protocol},
    ports::{self, PortPrefix},
    regions::{Block, Regions},
    selector,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Ingress,
    Egress,
}

/// A pod wired on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalEndpoint {
    pub ep_id: u32,
    /// From CNI_ARGS (`default` when the runtime gave none).
    pub namespace: String,
    pub name: String,
    pub ips: Vec<IpAddr>,
}

pub struct Input<'a> {
    pub state: &'a ClusterState,
    pub endpoints: &'a [LocalEndpoint],
    /// This node's own addresses (its pods' gateways): traffic from them is the node's.
    pub node_ips: &'a [IpAddr],
}

/// One allow entry. `proto: None` allows every protocol and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryKey {
    pub ep_id: u32,
    pub identity: u32,
    pub direction: Direction,
    pub proto: Option<u8>,
    pub port: PortPrefix,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointPolicy {
    /// The endpoint's identity per address (a dual-stack pod's two addresses may lie in
    /// different ipBlock regions).
    pub identities: BTreeMap<IpAddr, u32>,
    pub ingress_isolated: bool,
    pub egress_isolated: bool,
    /// Policies selecting the pod (indexes into `Compiled::policies`).
    pub selected_by: Vec<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpcacheEntry {
    pub identity: u32,
    /// One of this node's own addresses.
    pub host: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Compiled {
    pub endpoints: BTreeMap<u32, EndpointPolicy>,
    pub ipcache: BTreeMap<IpNetwork, IpcacheEntry>,
    /// Allow entries, each with the policy that contributed it.
    pub entries: BTreeMap<EntryKey, u32>,
    /// Policy references → (namespace, name).
    pub policies: Vec<(String, String)>,
    pub identities: BTreeMap<u32, IdentityKey>,
    /// Local endpoint addresses → (endpoint, identity).
    local_ips: HashMap<IpAddr, (u32, u32)>,
}

/// `policyTypes`, defaulted as the API does: Ingress always, Egress when there are egress rules.
pub fn policy_types(p: &NetworkPolicy) -> (bool, bool) {
    let spec = p.spec.as_ref();
    match spec
        .and_then(|s| s.policy_types.as_ref())
        .filter(|t| !t.is_empty())
    {
        Some(t) => (t.iter().any(|x| x == "Ingress"), t.iter().any(|x| x == "Egress")),
        None => (
            true,
            spec.and_then(|s| s.egress.as_ref())
                .is_some_and(|e| !e.is_empty()),
        ),
    }
}

/// Does policy `p` (of namespace `policy_ns`) select a pod of `namespace` with `labels`?
pub fn selects(p: &NetworkPolicy, policy_ns: &str, namespace: &str, labels: &Labels) -> bool {
    policy_ns == namespace
        && p.spec
            .as_ref()
            .and_then(|s| s.pod_selector.as_ref())
            .is_none_or(|sel| selector::matches(sel, labels))
}

fn peer_block(peer: &NetworkPolicyPeer) -> Option<Block> {
    let b = peer.ip_block.as_ref()?;
    Block::parse(&b.cidr, b.except.as_deref().unwrap_or_default())
}

fn host_net(ip: IpAddr) -> IpNetwork {
    IpNetwork::new(ip, if ip.is_ipv4() { 32 } else { 128 }).expect("host prefix")
}

const ALL_PORTS: PortPrefix = PortPrefix { value: 0, len: 0 };

/// The attributes of a local endpoint's pod (an empty-labelled pod when no Pod object is known).
fn endpoint_pod(state: &ClusterState, ep: &LocalEndpoint) -> PodInfo {
    state
        .pods
        .get(&(ep.namespace.clone(), ep.name.clone()))
        .cloned()
        .unwrap_or_else(|| PodInfo {
            namespace: ep.namespace.clone(),
            name: ep.name.clone(),
            labels: Labels::new(),
            ips: ep.ips.clone(),
            ports: Vec::new(),
            host_network: false,
        })
}

struct Ctx<'a> {
    state: &'a ClusterState,
    regions: Regions,
    /// Every identity in use, with its key.
    all: Vec<(u32, IdentityKey)>,
    /// Cache: (policy namespace, peer as JSON) → matching identities.
    peer_cache: HashMap<(String, String), Vec<u32>>,
}

impl Ctx<'_> {
    fn peer_identities(&mut self, policy_ns: &str, peer: &NetworkPolicyPeer) -> Vec<u32> {
        let cache_key = (
            policy_ns.to_owned(),
            serde_json::to_string(peer).unwrap_or_default(),
        );
        if let Some(v) = self.peer_cache.get(&cache_key) {
            return v.clone();
        }
        let out: Vec<u32> = if peer.ip_block.is_some() {
            // ipBlock with a selector beside it is invalid: it matches nothing.
            let with_selector = peer.pod_selector.is_some() || peer.namespace_selector.is_some();
            match peer_block(peer).filter(|_| !with_selector) {
                Some(b) => self
                    .all
                    .iter()
                    .filter(|(_, k)| k.blocks().contains(&b))
                    .map(|(i, _)| *i)
                    .collect(),
                None => Vec::new(),
            }
        } else if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
            Vec::new()
        } else {
            self.all
                .iter()
                .filter(|(_, k)| match k {
                    IdentityKey::Pod {
                        namespace, labels, ..
                    } => {
                        let ns_ok = match &peer.namespace_selector {
                            Some(ns_sel) => {
                                selector::matches(ns_sel, &self.state.namespace_labels(namespace))
                            }
                            None => namespace == policy_ns,
                        };
                        ns_ok
                            && peer
                                .pod_selector
                                .as_ref()
                                .is_none_or(|s| selector::matches(s, labels))
                    }
                    IdentityKey::Addresses { .. } => false,
                })
                .map(|(i, _)| *i)
                .collect()
        };
        self.peer_cache.insert(cache_key, out.clone());
        out
    }

    fn ports_of(&self, identity: u32) -> Option<&[ContainerPort]> {
        self.all
            .iter()
            .find(|(i, _)| *i == identity)
            .and_then(|(_, k)| match k {
                IdentityKey::Pod { ports, .. } => Some(ports.as_slice()),
                IdentityKey::Addresses { .. } => None,
            })
    }

    fn pod_identities(&self) -> Vec<u32> {
        self.all
            .iter()
            .filter(|(_, k)| matches!(k, IdentityKey::Pod { .. }))
            .map(|(i, _)| *i)
            .collect()
    }
}

fn emit(
    out: &mut BTreeMap<EntryKey, u32>,
    ep_id: u32,
    identity: u32,
    direction: Direction,
    m: Option<&ports::PortMatch>,
    pref: u32,
) {
    match m {
        None => {
            out.entry(EntryKey {
                ep_id,
                identity,
                direction,
                proto: None,
                port: ALL_PORTS,
            })
            .or_insert(pref);
        }
        Some(m) if m.prefixes.is_empty() => {
            let proto = Some(m.protocol.number());
            out.entry(EntryKey {
                ep_id,
                identity,
                direction,
                proto,
                port: ALL_PORTS,
            })
            .or_insert(pref);
        }
        Some(m) => {
            for p in &m.prefixes {
                let proto = Some(m.protocol.number());
                out.entry(EntryKey {
                    ep_id,
                    identity,
                    direction,
                    proto,
                    port: *p,
                })
                .or_insert(pref);
            }
        }
    }
}

/// One rule of a policy selecting endpoint `ep` (whose container ports are `own_ports`).
#[allow(clippy::too_many_arguments)]
fn compile_rule(
    ctx: &mut Ctx<'_>,
    out: &mut BTreeMap<EntryKey, u32>,
    ep_id: u32,
    own_ports: &[ContainerPort],
    policy_ns: &str,
    direction: Direction,
    peers: Option<&Vec<NetworkPolicyPeer>>,
    port_specs: Option<&Vec<NetworkPolicyPort>>,
    pref: u32,
) {
    let peer_ids: Option<Vec<u32>> = match peers.filter(|p| !p.is_empty()) {
        None => None, // everywhere
        Some(peers) => {
            let mut ids: BTreeSet<u32> = BTreeSet::new();
            for p in peers {
                ids.extend(ctx.peer_identities(policy_ns, p));
            }
            Some(ids.into_iter().collect())
        }
    };
    let specs: &[NetworkPolicyPort] = port_specs.map(|v| v.as_slice()).unwrap_or_default();
    if specs.is_empty() {
        match &peer_ids {
            None => emit(out, ep_id, IDENTITY_ANY, direction, None, pref),
            Some(ids) => ids
                .iter()
                .for_each(|i| emit(out, ep_id, *i, direction, None, pref)),
        }
        return;
    }
    for spec in specs {
        let named = matches!(
            spec.port,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(
                _
            ))
        );
        match (direction, named) {
            // Named ports of ingress rules are this pod's; numeric ports are the same for all peers.
            (Direction::Ingress, _) | (Direction::Egress, false) => {
                let Some(m) = ports::resolve(spec, Some(own_ports)) else {
                    continue;
                };
                match &peer_ids {
                    None => emit(out, ep_id, IDENTITY_ANY, direction, Some(&m), pref),
                    Some(ids) => ids
                        .iter()
                        .for_each(|i| emit(out, ep_id, *i, direction, Some(&m), pref)),
                }
            }
            // Named ports of egress rules are each destination pod's own: resolve per identity
            // (a wildcard peer becomes every pod identity; non-pods have no named ports).
            (Direction::Egress, true) => {
                let ids = peer_ids.clone().unwrap_or_else(|| ctx.pod_identities());
                for i in ids {
                    if let Some(m) = ports::resolve(spec, ctx.ports_of(i)) {
                        emit(out, ep_id, i, direction, Some(&m), pref);
                    }
                }
            }
        }
    }
}

/// Drop entries another entry of the same (endpoint, identity, direction) already covers.
fn prune(entries: BTreeMap<EntryKey, u32>) -> BTreeMap<EntryKey, u32> {
    let all_protos: BTreeSet<(u32, u32, Direction)> = entries
        .keys()
        .filter(|k| k.proto.is_none())
        .map(|k| (k.ep_id, k.identity, k.direction))
        .collect();
    let all_ports: BTreeSet<(u32, u32, Direction, u8)> = entries
        .keys()
        .filter_map(|k| (k.port.len == 0).then_some((k.ep_id, k.identity, k.direction, k.proto?)))
        .collect();
    entries
        .into_iter()
        .filter(|(k, _)| {
            let base = (k.ep_id, k.identity, k.direction);
            match k.proto {
                None => true,
                Some(p) => {
                    !all_protos.contains(&base)
                        && (k.port.len == 0 || !all_ports.contains(&(base.0, base.1, base.2, p)))
                }
            }
        })
        .collect()
}

/// Compile. `ids` keeps identity numbers stable across calls.
pub fn compile(input: &Input<'_>, ids: &mut Identities) -> Compiled {
    let state = input.state;
    let policies: Vec<(&(String, String), &NetworkPolicy)> = state.policies.iter().collect();
    // Every ipBlock of every policy, deduplicated.
    let mut blocks: BTreeSet<Block> = BTreeSet::new();
    for (_, p) in &policies {
        let Some(spec) = &p.spec else { continue };
        let ingress = spec
            .ingress
            .iter()
            .flatten()
            .flat_map(|r| r.from.iter().flatten());
        let egress = spec.egress.iter().flatten().flat_map(|r| r.to.iter().flatten());
        blocks.extend(ingress.chain(egress).filter_map(peer_block));
    }
    let regions = Regions::new(blocks.into_iter().collect());
    let block_set = |set: &BTreeSet<usize>| -> BTreeSet<Block> {
        set.iter().map(|i| regions.blocks[*i].clone()).collect()
    };

    let mut c = Compiled {
        policies: policies.iter().map(|(k, _)| (*k).clone()).collect(),
        ..Default::default()
    };
    let mut used: BTreeSet<u32> = BTreeSet::new();
    let mut add_identity = |c: &mut Compiled, key: IdentityKey| -> u32 {
        let id = ids.get(&key);
        used.insert(id);
        c.identities.entry(id).or_insert(key);
        id
    };
    // Regions of the address space that are not pods.
    for (prefix, inside) in &regions.prefixes {
        let id = add_identity(
            &mut c,
            IdentityKey::Addresses {
                blocks: block_set(inside),
            },
        );
        c.ipcache.insert(
            *prefix,
            IpcacheEntry {
                identity: id,
                host: false,
            },
        );
    }
    // Pods of the cluster (and this node's, whose Pod object may not be known yet).
    let pod_key = |p: &PodInfo, ip: IpAddr| IdentityKey::Pod {
        namespace: p.namespace.clone(),
        labels: p.labels.clone(),
        ports: {
            let mut v = p.ports.clone();
            v.sort();
            v
        },
        blocks: block_set(&regions.of(ip)),
    };
    for p in state.pods.values().filter(|p| !p.host_network) {
        for ip in &p.ips {
            let id = add_identity(&mut c, pod_key(p, *ip));
            c.ipcache.insert(
                host_net(*ip),
                IpcacheEntry {
                    identity: id,
                    host: false,
                },
            );
        }
    }
    let mut ep_pods = Vec::new();
    for ep in input.endpoints {
        let pod = endpoint_pod(state, ep);
        let mut identities = BTreeMap::new();
        for ip in &ep.ips {
            let identity = add_identity(&mut c, pod_key(&pod, *ip));
            c.ipcache.insert(
                host_net(*ip),
                IpcacheEntry {
                    identity,
                    host: false,
                },
            );
            c.local_ips.insert(*ip, (ep.ep_id, identity));
            identities.insert(*ip, identity);
        }
        ep_pods.push((ep, pod, identities));
    }
    for ip in input.node_ips {
        let id = add_identity(
            &mut c,
            IdentityKey::Addresses {
                blocks: block_set(&regions.of(*ip)),
            },
        );
        c.ipcache.insert(
            host_net(*ip),
            IpcacheEntry {
                identity: id,
                host: true,
            },
        );
    }
    ids.retain(&used);

    let mut ctx = Ctx {
        state,
        regions,
        all: c.identities.iter().map(|(i, k)| (*i, k.clone())).collect(),
        peer_cache: HashMap::new(),
    };
    let _ = &ctx.regions;
    let mut entries = BTreeMap::new();
    for (ep, pod, identities) in ep_pods {
        let mut ep_policy = EndpointPolicy {
            identities,
            ingress_isolated: false,
            egress_isolated: false,
            selected_by: Vec::new(),
        };
        for (pref, ((ns, _), p)) in policies.iter().enumerate() {
            if !selects(p, ns, &pod.namespace, &pod.labels) {
                continue;
            }
            ep_policy.selected_by.push(pref);
            let (ingress, egress) = policy_types(p);
            let spec = p.spec.as_ref();
            if ingress {
                ep_policy.ingress_isolated = true;
                for rule in spec.and_then(|s| s.ingress.as_ref()).into_iter().flatten() {
                    compile_rule(
                        &mut ctx,
                        &mut entries,
                        ep.ep_id,
                        &pod.ports,
                        ns,
                        Direction::Ingress,
                        rule.from.as_ref(),
                        rule.ports.as_ref(),
                        pref as u32,
                    );
                }
            }
            if egress {
                ep_policy.egress_isolated = true;
                for rule in spec.and_then(|s| s.egress.as_ref()).into_iter().flatten() {
                    compile_rule(
                        &mut ctx,
                        &mut entries,
                        ep.ep_id,
                        &pod.ports,
                        ns,
                        Direction::Egress,
                        rule.to.as_ref(),
                        rule.ports.as_ref(),
                        pref as u32,
                    );
                }
            }
        }
        c.endpoints.insert(ep.ep_id, ep_policy);
    }
    c.entries = prune(entries);
    c
}

impl Compiled {
    /// The identity of an address as the datapath finds it: a local endpoint's own, else
    /// the longest ipcache match. Returns (identity, is this node).
    pub fn identity_of(&self, ip: IpAddr) -> (u32, bool) {
        if let Some((_, identity)) = self.local_ips.get(&ip) {
            return (*identity, false);
        }
        self.ipcache
            .iter()
            .filter(|(p, _)| p.is_ipv4() == ip.is_ipv4() && p.contains(ip))
            .max_by_key(|(p, _)| p.prefix())
            .map(|(_, e)| (e.identity, e.host))
            .unwrap_or((u32::MAX, false))
    }

    /// The datapath's policy lookup: an entry for this identity or the wildcard.
    pub fn allows(
        &self,
        ep_id: u32,
        direction: Direction,
        identity: u32,
        proto: Protocol,
        port: u16,
    ) -> Option<u32> {
        for id in [identity, IDENTITY_ANY] {
            let lo = EntryKey {
                ep_id,
                identity: id,
                direction,
                proto: None,
                port: ALL_PORTS,
            };
            let hi = EntryKey {
                ep_id,
                identity: id,
                direction,
                proto: Some(u8::MAX),
                port: PortPrefix {
                    value: u16::MAX,
                    len: 16,
                },
            };
            for (k, pref) in self.entries.range(lo..=hi) {
                if k.proto.is_none() || (k.proto == Some(proto.number()) && k.port.contains(port)) {
                    return Some(*pref);
                }
            }
        }
        None
    }

    /// The whole decision for a new flow, as the datapath takes it on this node: the
    /// source's egress policy if it is a local pod, the destination's ingress policy if it
    /// is one (traffic from this node is always let in).
    pub fn decide(&self, src: IpAddr, dst: IpAddr, proto: Protocol, port: u16, from_node: bool) -> bool {
        let (src_id, src_host) = self.identity_of(src);
        let (dst_id, _) = self.identity_of(dst);
        if let Some((ep, _)) = self.local_ips.get(&src) {
            if src == dst {
                return true;
            }
            if self.endpoints[ep].egress_isolated
                && self.allows(*ep, Direction::Egress, dst_id, proto, port).is_none()
            {
                return false;
            }
        }
        if let Some((ep, _)) = self.local_ips.get(&dst)
            && self.endpoints[ep].ingress_isolated
            && !(src_host || from_node)
            && self
                .allows(*ep, Direction::Ingress, src_id, proto, port)
                .is_none()
        {
            return false;
        }
        true
    }
}
