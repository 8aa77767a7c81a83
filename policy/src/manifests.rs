//! Kubernetes objects from YAML (or JSON) manifests: what `sluiced --manifests DIR` reads.
//! Multi-document files and `kind: List` are accepted; kinds other than Namespace, Pod,
//! NetworkPolicy and Node are ignored. Objects default to the `default` namespace.

use std::{collections::BTreeMap, net::IpAddr};

use ipnetwork::IpNetwork;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use serde_json::Value;

use crate::model::{ClusterState, ContainerPort, NetworkPolicy, PodInfo, Protocol};

/// A node of the cluster, as cross-node routing needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    /// `spec.podCIDRs` (or `spec.podCIDR`).
    pub pod_cidrs: Vec<IpNetwork>,
    /// `status.addresses` of type InternalIP.
    pub internal_ips: Vec<IpAddr>,
}

/// Everything one source (a file, the API server) says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Objects {
    pub state: ClusterState,
    pub nodes: BTreeMap<String, NodeInfo>,
}

impl Objects {
    /// Add `other`'s objects (later sources win on the same name).
    pub fn merge(&mut self, other: &Objects) {
        self.state
            .namespaces
            .extend(other.state.namespaces.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.state
            .pods
            .extend(other.state.pods.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.state
            .policies
            .extend(other.state.policies.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.nodes
            .extend(other.nodes.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("YAML: {0}")]
    Yaml(String),
    #[error("document {index} ({kind} {name}): {msg}")]
    Object {
        index: usize,
        kind: String,
        name: String,
        msg: String,
    },
}

fn ns_of(meta_ns: &Option<String>) -> String {
    meta_ns
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// A Pod object in the model's shape.
pub fn pod_info(p: &Pod) -> Option<PodInfo> {
    let name = p.metadata.name.clone()?;
    let namespace = ns_of(&p.metadata.namespace);
    let spec = p.spec.as_ref();
    let mut ips: Vec<IpAddr> = Vec::new();
    if let Some(st) = &p.status {
        for ip in st.pod_ips.iter().flatten() {
            if let Ok(a) = ip.ip.parse() {
                ips.push(a);
            }
        }
        if ips.is_empty()
            && let Some(Ok(a)) = st.pod_ip.as_ref().map(|s| s.parse())
        {
            ips.push(a);
        }
    }
    let mut ports = Vec::new();
    for c in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
        for cp in c.ports.iter().flatten() {
            let (Ok(port), Some(protocol)) = (
                u16::try_from(cp.container_port),
                Protocol::from_api(cp.protocol.as_deref()),
            ) else {
                continue;
            };
            ports.push(ContainerPort {
                name: cp.name.clone(),
                port,
                protocol,
            });
        }
    }
    Some(PodInfo {
        namespace,
        name,
        labels: p.metadata.labels.clone().unwrap_or_default(),
        ips,
        ports,
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
    })
}

/// A Node object in the routing's shape.
pub fn node_info(n: &Node) -> Option<NodeInfo> {
    let name = n.metadata.name.clone()?;
    let spec = n.spec.as_ref();
    let mut cidrs: Vec<String> = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
    if cidrs.is_empty() {
        cidrs.extend(spec.and_then(|s| s.pod_cidr.clone()));
    }
    let internal_ips = n
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    Some(NodeInfo {
        name,
        pod_cidrs: cidrs.iter().filter_map(|c| c.parse().ok()).collect(),
        internal_ips,
    })
}

/// Just the kind of a document.
#[derive(serde::Deserialize)]
struct KindOnly {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<NameOnly>,
}

#[derive(serde::Deserialize)]
struct NameOnly {
    #[serde(default)]
    name: Option<String>,
}

/// `kind: List`: its items are read untyped (YAML 1.1 scalars like `y` inside list items
/// need quoting, as with any untyped YAML reader).
#[derive(serde::Deserialize)]
struct ListDoc {
    #[serde(default)]
    items: Vec<Value>,
}

fn options() -> serde_saphyr::Options {
    serde_saphyr::options! { strict_booleans: true }
}

fn typed<T: serde::de::DeserializeOwned>(doc: &str) -> Result<T, String> {
    serde_saphyr::from_str_with_options(doc, options()).map_err(|e| e.to_string())
}

fn add_object(
    out: &mut Objects,
    kind: &str,
    obj: Result<Value, String>,
    doc: Option<&str>,
    err: &dyn Fn(String) -> ManifestError,
) -> Result<(), ManifestError> {
    // Typed straight from the YAML text when we have it (so a field's type decides how a
    // scalar is read, as kubectl does), else from the untyped value.
    fn get<T: serde::de::DeserializeOwned>(
        obj: &Result<Value, String>,
        doc: Option<&str>,
    ) -> Result<T, String> {
        match doc {
            Some(d) => typed(d),
            None => serde_json::from_value(obj.clone()?).map_err(|e| e.to_string()),
        }
    }
    match kind {
        "Namespace" => {
            let n: Namespace = get(&obj, doc).map_err(err)?;
            let name = n.metadata.name.ok_or_else(|| err("no metadata.name".into()))?;
            out.state
                .namespaces
                .insert(name, n.metadata.labels.unwrap_or_default());
        }
        "Pod" => {
            let p: Pod = get(&obj, doc).map_err(err)?;
            let info = pod_info(&p).ok_or_else(|| err("no metadata.name".into()))?;
            out.state
                .pods
                .insert((info.namespace.clone(), info.name.clone()), info);
        }
        "NetworkPolicy" => {
            let mut p: NetworkPolicy = get(&obj, doc).map_err(err)?;
            let name = p
                .metadata
                .name
                .clone()
                .ok_or_else(|| err("no metadata.name".into()))?;
            let ns = ns_of(&p.metadata.namespace);
            p.metadata.namespace = Some(ns.clone());
            out.state.policies.insert((ns, name), std::sync::Arc::new(p));
        }
        "Node" => {
            let n: Node = get(&obj, doc).map_err(err)?;
            let info = node_info(&n).ok_or_else(|| err("no metadata.name".into()))?;
            out.nodes.insert(info.name.clone(), info);
        }
        _ => {}
    }
    Ok(())
}

/// Split a YAML stream into documents at `---` markers (a marker at the start of a line
/// always starts a document, even inside a block scalar).
fn documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        let marker = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if marker {
            docs.push(line[3..].to_owned());
            docs.last_mut().expect("pushed").push('\n');
        } else if line == "..." {
            docs.push(String::new());
        } else {
            let d = docs.last_mut().expect("non-empty");
            d.push_str(line);
            d.push('\n');
        }
    }
    docs
}

/// Parse one file's text. Any error rejects the whole file (the caller keeps what it had
/// before, so a half-written file never drops policies).
pub fn parse(text: &str) -> Result<Objects, ManifestError> {
    let mut out = Objects::default();
    for (index, doc) in documents(text).iter().enumerate() {
        if doc
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            continue;
        }
        let head: Option<KindOnly> = typed(doc).map_err(ManifestError::Yaml)?;
        let Some(head) = head else { continue };
        let kind = head.kind.unwrap_or_default();
        let name = head.metadata.and_then(|m| m.name).unwrap_or_default();
        let err = |msg: String| ManifestError::Object {
            index,
            kind: kind.clone(),
            name: name.clone(),
            msg,
        };
        if kind == "List" {
            let list: ListDoc = typed(doc).map_err(&err)?;
            for item in list.items {
                let k = item
                    .get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                add_object(&mut out, &k, Ok(item), None, &err)?;
            }
        } else {
            add_object(&mut out, &kind, Err(String::new()), Some(doc), &err)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_file() {
        let text = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: x
  labels: {team: red}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: a}}
spec:
  containers:
  - name: c
    image: busybox
    ports:
    - {name: serve-80-tcp, containerPort: 80}
    - {name: serve-81-udp, containerPort: 81, protocol: UDP}
status:
  podIPs: [{ip: 10.244.2.5}, {ip: "fd00::5"}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny}
spec:
  podSelector: {}
  policyTypes: [Ingress]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ignored}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
spec: {podCIDRs: [10.244.2.0/24, "fd00:10:244:2::/64"]}
status:
  addresses: [{type: InternalIP, address: 192.168.50.2}, {type: Hostname, address: n2}]
"#;
        let o = parse(text).unwrap();
        assert_eq!(o.state.namespaces["x"]["team"], "red");
        let pod = &o.state.pods[&("x".to_string(), "a".to_string())];
        assert_eq!(pod.ips.len(), 2);
        assert_eq!(pod.ports.len(), 2);
        assert_eq!(pod.ports[1].protocol, Protocol::Udp);
        assert!(
            o.state
                .policies
                .contains_key(&("default".to_string(), "deny".to_string()))
        );
        let n = &o.nodes["n2"];
        assert_eq!(n.pod_cidrs.len(), 2);
        assert_eq!(n.internal_ips, vec!["192.168.50.2".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn yaml_1_1_booleans_stay_strings() {
        let o = parse("kind: Namespace\nmetadata: {name: y, labels: {a: no, b: on}}\n").unwrap();
        assert_eq!(o.state.namespaces["y"]["a"], "no");
    }

    #[test]
    fn lists_and_errors() {
        let o = parse(r#"{"kind":"List","items":[{"kind":"Namespace","metadata":{"name":"y"}}]}"#).unwrap();
        assert!(o.state.namespaces.contains_key("y"));
        assert!(parse("kind: Pod\nmetadata: {name: p}\nspec: {containers: 7}\n").is_err());
        assert!(parse("key: [unclosed").is_err());
        assert!(parse("").unwrap().state.pods.is_empty());
    }
}
