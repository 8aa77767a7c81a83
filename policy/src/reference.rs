//! Reference evaluator: Kubernetes NetworkPolicy (`networking.k8s.io/v1`) read literally.
//!
//! This is the oracle sluice's optimised compiler is tested against, so it is deliberately
//! direct and unoptimised: every decision walks every policy, and nothing here is shared with
//! the compiler (only the plain types of [`crate::model`] are used; label selectors, CIDRs,
//! protocols and ports are all interpreted in this file).
//!
//! Quotations in the doc comments are from the API's `types.go`
//! (`k8s.io/api/networking/v1`). Where the API leaves a case open (mostly inputs the API
//! server's validation would reject), the reading chosen is the *conservative* one: the
//! malformed part matches nothing, so it can never grant more than the policy's author wrote.
//!
//! Interpretations, stated once:
//! - A policy's namespace is the namespace of its key in [`ClusterState::policies`].
//! - A policy without `spec` is the zero spec: `podSelector: {}` with default `policyTypes`,
//!   i.e. it denies all ingress to every pod of its namespace.
//! - `policyTypes` entries other than `Ingress`/`Egress` are ignored; an empty list is treated
//!   like an omitted one.
//! - Selector requirements the API server rejects match nothing: `In`/`NotIn` with no values,
//!   `Exists`/`DoesNotExist` with values, and unknown operators.
//! - A peer with no field set, or with `ipBlock` together with a selector, matches nothing.
//! - A ports entry with an unknown protocol, a number outside 1..=65535, an `endPort` without
//!   a numeric `port`, or `endPort < port`, matches nothing.
//! - An `ipBlock` whose `cidr` or any `except` entry is not a valid `address/prefix` matches
//!   nothing.

use std::net::IpAddr;

use k8s_openapi::{
    api::networking::v1::{IPBlock, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec},
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, LabelSelectorRequirement},
        util::intstr::IntOrString,
    },
};

use crate::model::{ClusterState, Labels, PodInfo, Protocol};

/// Is a connection from `src` to `dst` (IP addresses as on the packet) allowed, for
/// `proto`/`port` (the destination port)?
///
/// `from_node`: the connection is opened by the destination's own node (kubelet probes): always
/// allowed in.
///
/// "Traffic is allowed to a pod [...]" and "Outgoing traffic is allowed [...]": a connection
/// needs both the source's egress and the destination's ingress to allow it.
pub fn allowed(
    state: &ClusterState,
    src: IpAddr,
    dst: IpAddr,
    proto: Protocol,
    port: u16,
    from_node: bool,
) -> bool {
    egress_allowed(state, src, dst, proto, port) && ingress_allowed(state, src, dst, proto, port, from_node)
}

/// The egress half: does the source pod's egress allow `dst`:`port`/`proto`?
///
/// A source that is not a pod (outside the cluster, a node, a hostNetwork pod) has no egress
/// policy: always `true`. A pod can always reach itself.
pub fn egress_allowed(state: &ClusterState, src: IpAddr, dst: IpAddr, proto: Protocol, port: u16) -> bool {
    let Some(src_pod) = state.pod_by_ip(src) else {
        return true;
    };
    if is_same_pod(Some(src_pod), state.pod_by_ip(dst)) {
        return true;
    }
    let conn = Conn {
        remote: dst,
        dst,
        proto,
        port,
    };
    direction_allowed(state, src_pod, Direction::Egress, &conn)
}

/// The ingress half: does the destination pod's ingress allow `src` on `port`/`proto`?
///
/// A destination that is not a pod has no ingress policy: always `true`. "Traffic is allowed to
/// a pod [...] if the traffic source is the pod's local node" (`from_node`). A pod can always
/// reach itself.
pub fn ingress_allowed(
    state: &ClusterState,
    src: IpAddr,
    dst: IpAddr,
    proto: Protocol,
    port: u16,
    from_node: bool,
) -> bool {
    let Some(dst_pod) = state.pod_by_ip(dst) else {
        return true;
    };
    if from_node || is_same_pod(state.pod_by_ip(src), Some(dst_pod)) {
        return true;
    }
    let conn = Conn {
        remote: src,
        dst,
        proto,
        port,
    };
    direction_allowed(state, dst_pod, Direction::Ingress, &conn)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Ingress,
    Egress,
}

/// A connection as seen from the pod whose policies are being consulted.
struct Conn {
    /// The other end: the source for ingress, the destination for egress.
    remote: IpAddr,
    /// The destination address (named ports are resolved against the pod owning it).
    dst: IpAddr,
    proto: Protocol,
    /// The destination port.
    port: u16,
}

/// Both addresses belong to one and the same pod.
fn is_same_pod(a: Option<&PodInfo>, b: Option<&PodInfo>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.namespace == b.namespace && a.name == b.name,
        _ => false,
    }
}

/// `pod`'s policy decision in one direction for `conn`.
///
/// "Traffic is allowed to a pod if there are no NetworkPolicies selecting the pod [...] OR if
/// the traffic matches at least one ingress rule across all of the NetworkPolicy objects whose
/// podSelector matches the pod" (and likewise for egress). Only policies of the pod's own
/// namespace whose `policyTypes` include the direction count. Policies are additive: there are
/// no deny rules and their order is irrelevant.
fn direction_allowed(state: &ClusterState, pod: &PodInfo, direction: Direction, conn: &Conn) -> bool {
    // hostNetwork pods are never isolated (`pod_by_ip` already never returns them).
    if pod.host_network {
        return true;
    }
    let zero_spec = NetworkPolicySpec::default();
    let mut isolated = false;
    for ((policy_ns, _), policy) in &state.policies {
        let spec = policy.spec.as_ref().unwrap_or(&zero_spec);
        if *policy_ns != pod.namespace || !applies_to(spec, direction) || !pod_selector_matches(spec, pod) {
            continue;
        }
        isolated = true;
        if (rules(spec, direction).iter())
            .any(|(peers, ports)| rule_allows(state, policy_ns, peers, ports, conn))
        {
            return true;
        }
    }
    !isolated
}

/// "An empty selector matches all pods in the policy's namespace. [...] If it is not specified,
/// it defaults to an empty selector." (The namespace is checked by the caller.)
fn pod_selector_matches(spec: &NetworkPolicySpec, pod: &PodInfo) -> bool {
    spec.pod_selector
        .as_ref()
        .is_none_or(|sel| selector_matches(sel, &pod.labels))
}

/// `policyTypes`: "If this field is not specified, it will default based on the existence of
/// ingress or egress rules; policies that contain an egress section are assumed to affect
/// egress, and all policies (whether or not they contain an ingress section) are assumed to
/// affect ingress." An egress section counts only if it has at least one rule.
fn applies_to(spec: &NetworkPolicySpec, direction: Direction) -> bool {
    let wanted = match direction {
        Direction::Ingress => "Ingress",
        Direction::Egress => "Egress",
    };
    match spec.policy_types.as_deref() {
        Some(types) if !types.is_empty() => types.iter().any(|t| t == wanted),
        _ => match direction {
            Direction::Ingress => true,
            Direction::Egress => spec.egress.as_ref().is_some_and(|rules| !rules.is_empty()),
        },
    }
}

/// The rules of one direction as (peers, ports): `ingress[].from`/`ports` or
/// `egress[].to`/`ports`. Absent lists are empty lists. "If this field is empty then this
/// NetworkPolicy does not allow any traffic": no rules, so nothing matches.
fn rules(
    spec: &NetworkPolicySpec,
    direction: Direction,
) -> Vec<(&[NetworkPolicyPeer], &[NetworkPolicyPort])> {
    match direction {
        Direction::Ingress => (spec.ingress.iter().flatten())
            .map(|r| {
                (
                    r.from.as_deref().unwrap_or_default(),
                    r.ports.as_deref().unwrap_or_default(),
                )
            })
            .collect(),
        Direction::Egress => (spec.egress.iter().flatten())
            .map(|r| {
                (
                    r.to.as_deref().unwrap_or_default(),
                    r.ports.as_deref().unwrap_or_default(),
                )
            })
            .collect(),
    }
}

/// One rule. `from`/`to`: "If this field is empty or missing, this rule matches all sources
/// [destinations]. If this field is present and contains at least one item, this rule allows
/// traffic only if the traffic matches at least one item". `ports`: "If this field is empty or
/// missing, this rule matches all ports [...] If this field is present and contains at least
/// one item, then this rule allows traffic only if the traffic matches at least one port in the
/// list."
fn rule_allows(
    state: &ClusterState,
    policy_ns: &str,
    peers: &[NetworkPolicyPeer],
    ports: &[NetworkPolicyPort],
    conn: &Conn,
) -> bool {
    let peer_ok = peers.is_empty()
        || peers
            .iter()
            .any(|p| peer_matches(state, policy_ns, p, conn.remote));
    let port_ok = ports.is_empty() || ports.iter().any(|p| port_matches(state, p, conn));
    peer_ok && port_ok
}

/// One `NetworkPolicyPeer` against the remote address.
///
/// - `podSelector`: "If namespaceSelector is also set, then the NetworkPolicyPeer as a whole
///   selects the Pods matching PodSelector in the Namespaces selected by NamespaceSelector.
///   Otherwise it selects the Pods matching PodSelector in the policy's own namespace."
/// - `namespaceSelector`: "[...] Otherwise it selects all Pods in the Namespaces selected by
///   NamespaceSelector." Namespaces are selected by their labels.
/// - `ipBlock`: see [`ip_block_matches`]; it matches any address, pod or not.
///
/// Selectors only ever match (non-hostNetwork) pods: an address no pod owns is outside the
/// cluster.
fn peer_matches(state: &ClusterState, policy_ns: &str, peer: &NetworkPolicyPeer, remote: IpAddr) -> bool {
    match (&peer.ip_block, &peer.pod_selector, &peer.namespace_selector) {
        (Some(block), None, None) => ip_block_matches(block, remote),
        // Invalid peers: nothing set, or ipBlock combined with a selector.
        (None, None, None) | (Some(_), _, _) => false,
        (None, pod_sel, ns_sel) => {
            let Some(pod) = state.pod_by_ip(remote) else {
                return false;
            };
            let ns_ok = match ns_sel {
                None => pod.namespace == policy_ns,
                Some(sel) => selector_matches(sel, &state.namespace_labels(&pod.namespace)),
            };
            let pod_ok = pod_sel
                .as_ref()
                .is_none_or(|sel| selector_matches(sel, &pod.labels));
            ns_ok && pod_ok
        }
    }
}

/// `LabelSelector`: "The requirements of matchLabels and matchExpressions are ANDed. An empty
/// label selector matches all objects."
fn selector_matches(sel: &LabelSelector, labels: &Labels) -> bool {
    let labels_ok = (sel.match_labels.iter().flatten()).all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = (sel.match_expressions.iter().flatten()).all(|req| requirement_matches(req, labels));
    labels_ok && exprs_ok
}

/// `LabelSelectorRequirement`: "operator represents a key's relationship to a set of values.
/// Valid operators are In, NotIn, Exists and DoesNotExist. [...] If the operator is In or
/// NotIn, the values array must be non-empty. If the operator is Exists or DoesNotExist, the
/// values array must be empty." `NotIn` matches objects without the key (as in
/// `k8s.io/apimachinery/pkg/labels`). Invalid requirements match nothing.
fn requirement_matches(req: &LabelSelectorRequirement, labels: &Labels) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    let value = labels.get(&req.key);
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => !values.is_empty() && value.is_none_or(|v| !values.contains(v)),
        "Exists" => values.is_empty() && value.is_some(),
        "DoesNotExist" => values.is_empty() && value.is_none(),
        _ => false,
    }
}

/// `IPBlock`: "a particular CIDR (Ex. "192.168.1.0/24","2001:db8::/64") [...] except is a list
/// of CIDRs that should not be included within this IPBlock". Matches `addr` if it lies in
/// `cidr` and in none of the `except` entries. An IPv4 CIDR never contains an IPv6 address and
/// vice versa.
fn ip_block_matches(block: &IPBlock, addr: IpAddr) -> bool {
    let Some(cidr) = parse_cidr(&block.cidr) else {
        return false;
    };
    let mut excepts = Vec::new();
    for text in block.except.iter().flatten() {
        match parse_cidr(text) {
            Some(except) => excepts.push(except),
            None => return false,
        }
    }
    cidr_contains(cidr, addr) && !excepts.iter().any(|&except| cidr_contains(except, addr))
}

/// `address/prefix`, as Go's `net.ParseCIDR` (host bits may be set; they are ignored). `None`
/// if malformed.
fn parse_cidr(text: &str) -> Option<(IpAddr, u32)> {
    let (addr, prefix) = text.split_once('/')?;
    if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let prefix: u32 = prefix.parse().ok()?;
    let addr: IpAddr = addr.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((addr, prefix))
}

/// Does the network `(net, prefix)` contain `addr`? Different families never match.
fn cidr_contains((net, prefix): (IpAddr, u32), addr: IpAddr) -> bool {
    // Both families as 128-bit numbers aligned on the left, so a prefix counts the same bits.
    let (net, addr) = match (net, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => (u128::from(u32::from(n)) << 96, u128::from(u32::from(a)) << 96),
        (IpAddr::V6(n), IpAddr::V6(a)) => (u128::from(n), u128::from(a)),
        _ => return false,
    };
    prefix == 0 || (net ^ addr) >> (128 - prefix) == 0
}

/// One `NetworkPolicyPort`.
///
/// - `protocol`: "The protocol (TCP, UDP, or SCTP) which traffic must match. If not specified,
///   this field defaults to TCP."
/// - `port`: "This can either be a numerical or named port on a pod. If this field is not
///   provided, this matches all port names and numbers. If present, only traffic on the
///   specified protocol AND port will be matched." A named port is resolved against the
///   container ports of the destination pod (the protected pod for ingress, the remote pod for
///   egress), by name and protocol; a destination that is not a pod has no named ports.
/// - `endPort`: "the range of ports from port to endPort if set, inclusive [...] This field
///   cannot be defined if the port field is not defined or if the port field is defined as a
///   named (string) port. The endPort must be equal or greater than port."
fn port_matches(state: &ClusterState, entry: &NetworkPolicyPort, conn: &Conn) -> bool {
    if parse_protocol(entry.protocol.as_deref()) != Some(conn.proto) {
        return false;
    }
    let valid = |p: i32| (1..=65535).contains(&p);
    let port = i32::from(conn.port);
    match (&entry.port, entry.end_port) {
        (None, None) => true,
        (Some(IntOrString::Int(p)), None) => valid(*p) && *p == port,
        (Some(IntOrString::Int(p)), Some(end)) => valid(*p) && valid(end) && (*p..=end).contains(&port),
        (Some(IntOrString::String(name)), None) => state.pod_by_ip(conn.dst).is_some_and(|pod| {
            (pod.ports.iter()).any(|cp| {
                !name.is_empty()
                    && cp.name.as_deref() == Some(name.as_str())
                    && cp.protocol == conn.proto
                    && i32::from(cp.port) == port
            })
        }),
        (None, Some(_)) | (Some(IntOrString::String(_)), Some(_)) => false,
    }
}

/// The API's protocol spelling; absent means TCP; anything else is unknown (`None`).
fn parse_protocol(text: Option<&str>) -> Option<Protocol> {
    match text {
        None | Some("TCP") => Some(Protocol::Tcp),
        Some("UDP") => Some(Protocol::Udp),
        Some("SCTP") => Some(Protocol::Sctp),
        Some(_) => None,
    }
}
