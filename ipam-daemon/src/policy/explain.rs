//! `sluicectl policy NS/POD`: which policies select a pod and what they let in and out, in
//! terms of the compiled entries the datapath really holds.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sluice_api::PodRef;
use sluice_policy::{
    compile::{Direction, policy_types},
    identity::{IDENTITY_ANY, IdentityKey},
    selector,
};

use super::PolicyEngine;

fn describe_identity(engine: &PolicyEngine, id: u32) -> String {
    if id == IDENTITY_ANY {
        return "anywhere".into();
    }
    match engine.compiled.identities.get(&id).map(|k| &**k) {
        Some(IdentityKey::Pod {
            namespace, labels, ..
        }) => {
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("pods in {namespace} with {{{}}}", l.join(","))
        }
        Some(IdentityKey::Addresses { blocks }) if blocks.is_empty() => {
            "addresses outside every ipBlock".into()
        }
        Some(IdentityKey::Addresses { blocks }) => {
            let b: Vec<String> = blocks
                .iter()
                .map(|b| {
                    if b.except.is_empty() {
                        b.cidr.to_string()
                    } else {
                        let ex: Vec<String> = b.except.iter().map(|e| e.to_string()).collect();
                        format!("{} except {}", b.cidr, ex.join(","))
                    }
                })
                .collect();
            format!("addresses in {}", b.join(" and "))
        }
        None => format!("identity {id}"),
    }
}

fn proto_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}

/// Explain a pod. `local`: its endpoint id on this node, if any.
pub fn explain(engine: &PolicyEngine, pod: &PodRef, local: Option<u32>) -> Value {
    let state = &engine.objects.state;
    let model = state.pods.get(&(pod.namespace.clone(), pod.name.clone()));
    let labels = model.map(|p| p.labels.clone()).unwrap_or_default();
    let selecting: Vec<Value> = state
        .policies
        .iter()
        .filter(|((ns, _), p)| {
            *ns == pod.namespace
                && p.spec
                    .as_ref()
                    .and_then(|s| s.pod_selector.as_ref())
                    .is_none_or(|sel| selector::matches(sel, &labels))
        })
        .map(|((ns, name), p)| {
            let (ing, eg) = policy_types(p);
            let mut types = Vec::new();
            if ing {
                types.push("Ingress");
            }
            if eg {
                types.push("Egress");
            }
            let spec = p.spec.as_ref();
            json!({
                "name": format!("{ns}/{name}"),
                "policyTypes": types,
                "ingress": spec.and_then(|s| s.ingress.clone()).unwrap_or_default(),
                "egress": spec.and_then(|s| s.egress.clone()).unwrap_or_default(),
            })
        })
        .collect();
    let mut out = json!({
        "pod": format!("{}/{}", pod.namespace, pod.name),
        "known": model.is_some(),
        "labels": labels,
        "local": local.is_some(),
        "policies": selecting,
    });
    let Some(ep_id) = local else {
        return out;
    };
    let Some(p) = engine.compiled.endpoints.get(&ep_id) else {
        return out;
    };
    out["ep_id"] = json!(ep_id);
    out["identities"] = json!(
        p.identities
            .iter()
            .map(|(ip, id)| (ip.to_string(), *id))
            .collect::<BTreeMap<_, _>>()
    );
    out["ingress_isolated"] = json!(p.ingress_isolated);
    out["egress_isolated"] = json!(p.egress_isolated);
    // Group the endpoint's entries by (direction, peer).
    let mut allowed: BTreeMap<(Direction, u32), (Vec<String>, u32)> = BTreeMap::new();
    let mut count = 0;
    let subjects: std::collections::BTreeSet<u32> = p.identities.values().copied().collect();
    for (k, pref) in engine
        .compiled
        .entries
        .iter()
        .filter(|(k, _)| subjects.contains(&k.subject))
    {
        count += 1;
        let ports = match k.proto {
            None => "all".to_owned(),
            Some(pr) if k.port.len == 0 => format!("{}/all", proto_name(pr)),
            Some(pr) => {
                let lo = k.port.value;
                let hi = (lo as u32 + (1u32 << (16 - k.port.len as u32)) - 1) as u16;
                if lo == hi {
                    format!("{}/{lo}", proto_name(pr))
                } else {
                    format!("{}/{lo}-{hi}", proto_name(pr))
                }
            }
        };
        let e = allowed
            .entry((k.direction, k.identity))
            .or_insert((Vec::new(), *pref));
        e.0.push(ports);
    }
    out["datapath_entries"] = json!(count);
    out["allowed"] = json!(
        allowed
            .into_iter()
            .map(|((dir, id), (ports, pref))| json!({
                "direction": if dir == Direction::Ingress { "ingress" } else { "egress" },
                "peer": describe_identity(engine, id),
                "identity": id,
                "ports": ports,
                "policy": engine.compiled.policies.get(pref as usize).map(|(ns, n)| format!("{ns}/{n}")).unwrap_or_default(),
            }))
            .collect::<Vec<_>>()
    );
    out
}
