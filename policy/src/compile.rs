//! The policy compiler: from the cluster model and this node's endpoints to what the datapath
//! looks up per new flow: each local endpoint's identity and isolation, the ipcache (address
//! prefix → identity) and the allow entries (subject identity, peer identity, direction,
//! protocol, port prefix). Per-packet cost is then independent of the number of policies and
//! rules.
//!
//! Entries are keyed by the *local pod's identity* (the subject), not by endpoint: an identity
//! stands for everything selection and named-port resolution depend on (namespace, labels,
//! container ports, ipBlock region), so pods alike share their entries, and the number of
//! entries follows the number of distinct kinds of pods, not of pods.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
};

use ipnetwork::IpNetwork;
use k8s_openapi::{
    api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort},
    apimachinery::pkg::util::intstr::IntOrString,
};

use crate::{
    identity::{IDENTITY_ANY, Identities, IdentityKey},
    model::{ClusterState, ContainerPort, Labels, PodInfo, Protocol},
    ports::{self, PortMatch, PortPrefix},
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
    /// The identity of the local pod the entry is about.
    pub subject: u32,
    /// The peer's identity (`IDENTITY_ANY`: every peer).
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
    pub identities: BTreeMap<u32, Arc<IdentityKey>>,
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

/// Which rule peer: (policy, egress?, rule, peer).
type PeerRef = (usize, bool, usize, usize);

struct Ctx<'a> {
    state: &'a ClusterState,
    identities: &'a BTreeMap<u32, Arc<IdentityKey>>,
    /// Every pod identity.
    pods: Vec<u32>,
    /// ipBlock → identities inside it.
    by_block: HashMap<Block, Vec<u32>>,
    peer_cache: HashMap<PeerRef, Arc<Vec<u32>>>,
}

impl Ctx<'_> {
    fn peer_identities(&mut self, at: PeerRef, policy_ns: &str, peer: &NetworkPolicyPeer) -> Arc<Vec<u32>> {
        if let Some(v) = self.peer_cache.get(&at) {
            return v.clone();
        }
        let out: Vec<u32> = if peer.ip_block.is_some() {
            // ipBlock with a selector beside it is invalid: it matches nothing.
            let with_selector = peer.pod_selector.is_some() || peer.namespace_selector.is_some();
            match peer_block(peer).filter(|_| !with_selector) {
                Some(b) => self.by_block.get(&b).cloned().unwrap_or_default(),
                None => Vec::new(),
            }
        } else if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
            Vec::new()
        } else {
            let mut ns_ok: HashMap<&str, bool> = HashMap::new();
            let mut out = Vec::new();
            for id in &self.pods {
                let IdentityKey::Pod {
                    namespace, labels, ..
                } = &*self.identities[id]
                else {
                    continue;
                };
                let in_ns =
                    *ns_ok
                        .entry(namespace.as_str())
                        .or_insert_with(|| match &peer.namespace_selector {
                            Some(sel) => selector::matches(sel, &self.state.namespace_labels(namespace)),
                            None => namespace == policy_ns,
                        });
                if in_ns
                    && peer
                        .pod_selector
                        .as_ref()
                        .is_none_or(|s| selector::matches(s, labels))
                {
                    out.push(*id);
                }
            }
            out
        };
        let out = Arc::new(out);
        self.peer_cache.insert(at, out.clone());
        out
    }

    fn ports_of(&self, identity: u32) -> Option<&[ContainerPort]> {
        match self.identities.get(&identity).map(|k| &**k) {
            Some(IdentityKey::Pod { ports, .. }) => Some(ports.as_slice()),
            _ => None,
        }
    }
}

fn emit(
    out: &mut BTreeMap<EntryKey, u32>,
    subject: u32,
    identity: u32,
    direction: Direction,
    m: Option<&PortMatch>,
    pref: u32,
) {
    let mut put = |proto, port| {
        out.entry(EntryKey {
            subject,
            identity,
            direction,
            proto,
            port,
        })
        .or_insert(pref);
    };
    match m {
        None => put(None, ALL_PORTS),
        Some(m) if m.prefixes.is_empty() => put(Some(m.protocol.number()), ALL_PORTS),
        Some(m) => m.prefixes.iter().for_each(|p| put(Some(m.protocol.number()), *p)),
    }
}

/// One rule of policy `pref` for the subject (a local pod identity whose ports are `own_ports`).
#[allow(clippy::too_many_arguments)]
fn compile_rule(
    ctx: &mut Ctx<'_>,
    out: &mut BTreeMap<EntryKey, u32>,
    subject: u32,
    own_ports: &[ContainerPort],
    (pref, policy_ns): (usize, &str),
    (direction, rule): (Direction, usize),
    peers: Option<&Vec<NetworkPolicyPeer>>,
    port_specs: Option<&Vec<NetworkPolicyPort>>,
) {
    let egress = direction == Direction::Egress;
    let peer_ids: Option<Vec<u32>> = match peers.filter(|p| !p.is_empty()) {
        None => None, // everywhere
        Some(peers) => {
            let mut ids: BTreeSet<u32> = BTreeSet::new();
            for (i, p) in peers.iter().enumerate() {
                ids.extend(ctx.peer_identities((pref, egress, rule, i), policy_ns, p).iter());
            }
            Some(ids.into_iter().collect())
        }
    };
    let pref32 = pref as u32;
    let specs: &[NetworkPolicyPort] = port_specs.map(|v| v.as_slice()).unwrap_or_default();
    if specs.is_empty() {
        match &peer_ids {
            None => emit(out, subject, IDENTITY_ANY, direction, None, pref32),
            Some(ids) => ids
                .iter()
                .for_each(|i| emit(out, subject, *i, direction, None, pref32)),
        }
        return;
    }
    for spec in specs {
        let named = matches!(spec.port, Some(IntOrString::String(_)));
        if direction == Direction::Egress && named {
            // Named ports of egress rules are each destination pod's own: resolve per identity
            // (a wildcard peer becomes every pod identity; non-pods have no named ports).
            let ids = peer_ids.clone().unwrap_or_else(|| ctx.pods.clone());
            for i in ids {
                if let Some(m) = ports::resolve(spec, ctx.ports_of(i)) {
                    emit(out, subject, i, direction, Some(&m), pref32);
                }
            }
            continue;
        }
        // Named ports of ingress rules are the subject's own; numeric ports are the same for
        // every peer.
        let Some(m) = ports::resolve(spec, Some(own_ports)) else {
            continue;
        };
        match &peer_ids {
            None => emit(out, subject, IDENTITY_ANY, direction, Some(&m), pref32),
            Some(ids) => ids
                .iter()
                .for_each(|i| emit(out, subject, *i, direction, Some(&m), pref32)),
        }
    }
}

/// Drop entries another entry of the same (subject, identity, direction) already covers.
fn prune(entries: BTreeMap<EntryKey, u32>) -> BTreeMap<EntryKey, u32> {
    let all_protos: HashSet<(u32, u32, Direction)> = entries
        .keys()
        .filter(|k| k.proto.is_none())
        .map(|k| (k.subject, k.identity, k.direction))
        .collect();
    let all_ports: HashSet<(u32, u32, Direction, u8)> = entries
        .keys()
        .filter_map(|k| (k.port.len == 0).then_some((k.subject, k.identity, k.direction, k.proto?)))
        .collect();
    entries
        .into_iter()
        .filter(|(k, _)| match k.proto {
            None => true,
            Some(p) => {
                !all_protos.contains(&(k.subject, k.identity, k.direction))
                    && (k.port.len == 0 || !all_ports.contains(&(k.subject, k.identity, k.direction, p)))
            }
        })
        .collect()
}

/// What one subject (a kind of local pod) is subject to.
struct Subject {
    ingress_isolated: bool,
    egress_isolated: bool,
    selected_by: Vec<usize>,
}

/// Compile. `ids` keeps identity numbers stable across calls.
pub fn compile(input: &Input<'_>, ids: &mut Identities) -> Compiled {
    let state = input.state;
    let policies: Vec<(&(String, String), &NetworkPolicy)> =
        state.policies.iter().map(|(k, p)| (k, &**p)).collect();
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
    let block_set =
        |set: &BTreeSet<usize>| -> Vec<Block> { set.iter().map(|i| regions.blocks[*i].clone()).collect() };

    let mut c = Compiled {
        policies: policies.iter().map(|(k, _)| (*k).clone()).collect(),
        ..Default::default()
    };
    let mut used: HashSet<u32> = HashSet::new();
    let mut add_identity = |c: &mut Compiled, key: IdentityKey| -> u32 {
        let (id, key) = ids.get(key);
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
    let mut ep_ids: Vec<(u32, BTreeMap<IpAddr, u32>)> = Vec::new();
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
        ep_ids.push((ep.ep_id, identities));
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

    let mut by_block: HashMap<Block, Vec<u32>> = HashMap::new();
    let mut pods = Vec::new();
    for (id, key) in &c.identities {
        for b in key.blocks() {
            by_block.entry(b.clone()).or_default().push(*id);
        }
        if matches!(**key, IdentityKey::Pod { .. }) {
            pods.push(*id);
        }
    }
    let identities = c.identities.clone();
    let mut ctx = Ctx {
        state,
        identities: &identities,
        pods,
        by_block,
        peer_cache: HashMap::new(),
    };
    // Policies by namespace, and the selection of each (namespace, labels) computed once.
    let mut by_ns: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, ((ns, _), _)) in policies.iter().enumerate() {
        by_ns.entry(ns.as_str()).or_default().push(i);
    }
    let mut selection: HashMap<(String, Labels), Vec<usize>> = HashMap::new();
    let subject_ids: BTreeSet<u32> = ep_ids.iter().flat_map(|(_, m)| m.values().copied()).collect();
    let mut entries = BTreeMap::new();
    let mut subjects: HashMap<u32, Subject> = HashMap::new();
    for subject in subject_ids {
        let IdentityKey::Pod {
            namespace,
            labels,
            ports: own_ports,
            ..
        } = &*identities[&subject]
        else {
            continue;
        };
        let selected = selection
            .entry((namespace.clone(), labels.clone()))
            .or_insert_with(|| {
                by_ns
                    .get(namespace.as_str())
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(|i| selects(policies[*i].1, &policies[*i].0.0, namespace, labels))
                    .collect()
            })
            .clone();
        let mut s = Subject {
            ingress_isolated: false,
            egress_isolated: false,
            selected_by: selected.clone(),
        };
        for pref in selected {
            let ((ns, _), p) = policies[pref];
            let (ingress, egress) = policy_types(p);
            let spec = p.spec.as_ref();
            if ingress {
                s.ingress_isolated = true;
                for (r, rule) in spec
                    .and_then(|s| s.ingress.as_ref())
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    compile_rule(
                        &mut ctx,
                        &mut entries,
                        subject,
                        own_ports,
                        (pref, ns),
                        (Direction::Ingress, r),
                        rule.from.as_ref(),
                        rule.ports.as_ref(),
                    );
                }
            }
            if egress {
                s.egress_isolated = true;
                for (r, rule) in spec
                    .and_then(|s| s.egress.as_ref())
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    compile_rule(
                        &mut ctx,
                        &mut entries,
                        subject,
                        own_ports,
                        (pref, ns),
                        (Direction::Egress, r),
                        rule.to.as_ref(),
                        rule.ports.as_ref(),
                    );
                }
            }
        }
        subjects.insert(subject, s);
    }
    for (ep_id, identities) in ep_ids {
        // All identities of one endpoint share namespace, labels and ports: one selection.
        let s = identities.values().next().and_then(|i| subjects.get(i));
        c.endpoints.insert(
            ep_id,
            EndpointPolicy {
                ingress_isolated: s.is_some_and(|s| s.ingress_isolated),
                egress_isolated: s.is_some_and(|s| s.egress_isolated),
                selected_by: s.map(|s| s.selected_by.clone()).unwrap_or_default(),
                identities,
            },
        );
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
        let host = host_net(ip);
        (0..=host.prefix())
            .rev()
            .find_map(|len| {
                let p = IpNetwork::new(ip, len).ok()?;
                let p = IpNetwork::new(p.network(), len).ok()?;
                self.ipcache.get(&p)
            })
            .map(|e| (e.identity, e.host))
            .unwrap_or((u32::MAX, false))
    }

    /// The datapath's policy lookup: an entry for this peer identity or the wildcard.
    pub fn allows(
        &self,
        subject: u32,
        direction: Direction,
        identity: u32,
        proto: Protocol,
        port: u16,
    ) -> Option<u32> {
        for id in [identity, IDENTITY_ANY] {
            let lo = EntryKey {
                subject,
                identity: id,
                direction,
                proto: None,
                port: ALL_PORTS,
            };
            let hi = EntryKey {
                subject,
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
        if let Some((ep, subject)) = self.local_ips.get(&src) {
            if src == dst {
                return true;
            }
            if self.endpoints[ep].egress_isolated
                && self
                    .allows(*subject, Direction::Egress, dst_id, proto, port)
                    .is_none()
            {
                return false;
            }
        }
        if let Some((ep, subject)) = self.local_ips.get(&dst)
            && self.endpoints[ep].ingress_isolated
            && !(src_host || from_node)
            && self
                .allows(*subject, Direction::Ingress, src_id, proto, port)
                .is_none()
        {
            return false;
        }
        true
    }
}
