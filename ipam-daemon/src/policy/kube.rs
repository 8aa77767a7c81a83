//! Kubernetes API mode: Namespaces, Pods, NetworkPolicies and Nodes from the API server, fed
//! to the same policy compiler as `--manifests` (an [`Objects`] built with the same
//! [`manifests::pod_info`] / [`manifests::node_info`] conversions).
//!
//! Split in two so the translation can be tested without an API server:
//!
//! - [`Store`]: pure. Turns watcher events into an [`Objects`], with kube-runtime's re-list
//!   semantics (`Init` .. `InitApply`* .. `InitDone` replaces a kind's whole set at once, so
//!   objects deleted while the watch was down disappear, and nothing is half-replaced while the
//!   list is being read).
//! - [`initial`], [`run`]: the I/O. One kube-runtime `watcher` per kind (it re-lists and
//!   resumes after disconnects; `default_backoff` spaces the retries), and a publisher that
//!   hands the store's objects to the node, debounced and coalesced, on its own schedule: the
//!   watch loops only update the store and never wait for a policy apply.
//!
//! ## What is watched, and the memory trade-off
//!
//! Policy peers can be pods on any node, so every Pod of the cluster is watched (not only this
//! node's, with `spec.nodeName`: that would be a subset of the same stream, and two streams
//! for one pod would make its deletion ambiguous). The API server cannot project arbitrary
//! fields, and its metadata-only form (`PartialObjectMetadata`) lacks `status.podIPs`, so full
//! objects come over the wire. What stays in memory is small, though:
//!
//! - objects are decoded into lean wire types ([`PodWire`], [`NodeWire`], ...) that name only
//!   the fields policy and routing read (name, namespace, labels, resourceVersion, container
//!   ports, hostNetwork, podIPs, phase; podCIDRs and addresses): serde skips everything else
//!   (managedFields, annotations, volumes, env, conditions, a node's image list) without
//!   allocating it;
//! - no object cache is kept (no reflector): the store holds only the model's values
//!   ([`PodInfo`], [`NodeInfo`], namespace labels, policies with their metadata trimmed to
//!   name and namespace), roughly a few hundred bytes per pod;
//! - lists are paged (500 objects a page), so a large cluster's list is never one huge body;
//! - during a re-list a kind's old and new sets coexist until `InitDone` (twice that kind's
//!   share for a moment): the price of never exposing a half-read cluster to the compiler.
//!
//! Status-only updates (a pod's conditions, a node's heartbeat) change nothing in the model:
//! the store compares values and such events trigger no recompilation.

use std::{
    collections::BTreeMap,
    fmt::Debug,
    future::Future,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::{
    api::{
        core::v1::{
            Container, ContainerPort, Namespace, Node, NodeAddress, NodeSpec, NodeStatus, Pod, PodIP,
            PodSpec, PodStatus,
        },
        networking::v1::NetworkPolicySpec,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client,
    api::ListParams,
    runtime::{WatchStreamExt, watcher},
};
use serde::{Deserialize, Deserializer, de::DeserializeOwned};
use sluice_policy::{
    manifests::{self, NodeInfo, Objects},
    model::{Labels, NetworkPolicy, PodInfo},
};
use tokio::sync::Notify;

use crate::node::Node as SluiceNode;

/// How long start-up waits for the first full list before giving up (the daemon then exits
/// and is restarted: it never starts enforcing from a partial or empty view).
pub const INITIAL_LIST_TIMEOUT: Duration = Duration::from_secs(60);

/// Quiet time after a change before the objects are handed to the compiler, so a burst (a
/// Deployment's pods, a namespace's policies) costs one compilation.
pub const DEBOUNCE: Duration = Duration::from_millis(10);

/// Objects per list page.
const PAGE_SIZE: u32 = 500;

// ---------------------------------------------------------------------------------------
// Lean wire types
// ---------------------------------------------------------------------------------------

/// The metadata fields sluice needs. `resourceVersion` is kept because the watcher resumes
/// from the last object's version.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct LeanMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    resource_version: Option<String>,
}

/// `metadata` read through [`LeanMeta`]: annotations and managedFields, often the bulk of an
/// object, are skipped without being allocated.
fn lean_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = Option::<LeanMeta>::deserialize(d)?.unwrap_or_default();
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        labels: m.labels,
        resource_version: m.resource_version,
        ..Default::default()
    })
}

/// Makes a lean type a Kubernetes resource with the same API coordinates as the full type, so
/// `kube::Api` and the watcher request the same URLs.
macro_rules! lean_resource {
    ($lean:ty, $full:ty) => {
        impl k8s_openapi::Resource for $lean {
            const API_VERSION: &'static str = <$full as k8s_openapi::Resource>::API_VERSION;
            const GROUP: &'static str = <$full as k8s_openapi::Resource>::GROUP;
            const KIND: &'static str = <$full as k8s_openapi::Resource>::KIND;
            const VERSION: &'static str = <$full as k8s_openapi::Resource>::VERSION;
            const URL_PATH_SEGMENT: &'static str = <$full as k8s_openapi::Resource>::URL_PATH_SEGMENT;
            type Scope = <$full as k8s_openapi::Resource>::Scope;
        }

        impl k8s_openapi::Metadata for $lean {
            type Ty = ObjectMeta;

            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// A Namespace: its labels.
#[derive(Clone, Debug, Deserialize)]
pub struct NamespaceWire {
    #[serde(default, deserialize_with = "lean_meta")]
    pub metadata: ObjectMeta,
}
lean_resource!(NamespaceWire, Namespace);

/// A NetworkPolicy: its spec, read with k8s-openapi's own (strict) types as the manifests
/// reader does.
#[derive(Clone, Debug, Deserialize)]
pub struct PolicyWire {
    #[serde(default, deserialize_with = "lean_meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<NetworkPolicySpec>,
}
lean_resource!(PolicyWire, NetworkPolicy);

/// A Pod: what [`manifests::pod_info`] reads, plus the phase. Every field is optional, so an
/// odd object never fails the whole watch event.
#[derive(Clone, Debug, Deserialize)]
pub struct PodWire {
    #[serde(default, deserialize_with = "lean_meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<PodSpecWire>,
    #[serde(default)]
    status: Option<PodStatusWire>,
}
lean_resource!(PodWire, Pod);

#[derive(Clone, Debug, Deserialize)]
struct PodSpecWire {
    #[serde(default)]
    containers: Option<Vec<ContainerWire>>,
    #[serde(default, rename = "hostNetwork")]
    host_network: Option<bool>,
}

#[derive(Clone, Debug, Deserialize)]
struct ContainerWire {
    #[serde(default)]
    ports: Option<Vec<PortWire>>,
}

#[derive(Clone, Debug, Deserialize)]
struct PortWire {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, rename = "containerPort")]
    container_port: Option<i32>,
    #[serde(default)]
    protocol: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
struct PodStatusWire {
    #[serde(default)]
    phase: Option<String>,
    #[serde(default, rename = "podIP")]
    pod_ip: Option<String>,
    #[serde(default, rename = "podIPs")]
    pod_ips: Option<Vec<PodIpWire>>,
}

#[derive(Clone, Debug, Deserialize)]
struct PodIpWire {
    #[serde(default)]
    ip: Option<String>,
}

/// A Node: what [`manifests::node_info`] reads.
#[derive(Clone, Debug, Deserialize)]
pub struct NodeWire {
    #[serde(default, deserialize_with = "lean_meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<NodeSpecWire>,
    #[serde(default)]
    status: Option<NodeStatusWire>,
}
lean_resource!(NodeWire, Node);

#[derive(Clone, Debug, Deserialize)]
struct NodeSpecWire {
    #[serde(default, rename = "podCIDR")]
    pod_cidr: Option<String>,
    #[serde(default, rename = "podCIDRs")]
    pod_cidrs: Option<Vec<String>>,
}

#[derive(Clone, Debug, Deserialize)]
struct NodeStatusWire {
    #[serde(default)]
    addresses: Option<Vec<NodeAddressWire>>,
}

#[derive(Clone, Debug, Deserialize)]
struct NodeAddressWire {
    #[serde(default, rename = "type")]
    type_: Option<String>,
    #[serde(default)]
    address: Option<String>,
}

impl PodWire {
    /// The k8s-openapi Pod with just these fields, for [`manifests::pod_info`] (one
    /// conversion for both sources).
    fn to_pod(&self) -> Pod {
        let spec = self.spec.as_ref().map(|s| PodSpec {
            host_network: s.host_network,
            containers: s
                .containers
                .iter()
                .flatten()
                .map(|c| Container {
                    ports: c.ports.as_ref().map(|ports| {
                        ports
                            .iter()
                            .filter_map(|p| {
                                Some(ContainerPort {
                                    name: p.name.clone(),
                                    container_port: p.container_port?,
                                    protocol: p.protocol.clone(),
                                    ..Default::default()
                                })
                            })
                            .collect()
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        let status = self.status.as_ref().map(|s| PodStatus {
            phase: s.phase.clone(),
            pod_ip: s.pod_ip.clone(),
            pod_ips: s.pod_ips.as_ref().map(|ips| {
                ips.iter()
                    .filter_map(|p| Some(PodIP { ip: p.ip.clone()? }))
                    .collect()
            }),
            ..Default::default()
        });
        Pod {
            metadata: self.metadata.clone(),
            spec,
            status,
        }
    }

    /// A pod that has finished (`Succeeded`, `Failed`) keeps its podIPs in its status, but
    /// those addresses go back to the pool and may already belong to a new pod: such a pod
    /// counts as gone (as kube-proxy and other CNIs treat it).
    fn finished(&self) -> bool {
        matches!(
            self.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
    }
}

impl NodeWire {
    /// The k8s-openapi Node with just these fields, for [`manifests::node_info`].
    fn to_node(&self) -> Node {
        Node {
            metadata: self.metadata.clone(),
            spec: self.spec.as_ref().map(|s| NodeSpec {
                pod_cidr: s.pod_cidr.clone(),
                pod_cidrs: s.pod_cidrs.clone(),
                ..Default::default()
            }),
            status: self.status.as_ref().map(|s| NodeStatus {
                addresses: s.addresses.as_ref().map(|a| {
                    a.iter()
                        .filter_map(|a| {
                            Some(NodeAddress {
                                type_: a.type_.clone()?,
                                address: a.address.clone()?,
                            })
                        })
                        .collect()
                }),
                ..Default::default()
            }),
        }
    }
}

/// Objects default to the `default` namespace (as in the manifests reader; the API server
/// always sets it).
fn namespace_of(meta: &ObjectMeta) -> String {
    meta.namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into())
}

// ---------------------------------------------------------------------------------------
// The store: watcher events → Objects (pure)
// ---------------------------------------------------------------------------------------

/// One kind of object the store follows: its wire type and where its values live in
/// [`Objects`].
pub trait Kind {
    /// What the API server sends, decoded.
    type Object: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static;
    type Key: Ord + Clone + Send;
    type Value: PartialEq + Clone + Send;
    /// For logs.
    const NAME: &'static str;
    /// Bit in [`Store`]'s set of listed kinds.
    const BIT: u8;

    /// The object's key, and its value in the model (`None`: the object exists but counts as
    /// absent, like a finished pod). `None` overall: unusable (no name), ignored.
    fn entry(obj: &Self::Object) -> Option<(Self::Key, Option<Self::Value>)>;
    fn map(objects: &mut Objects) -> &mut BTreeMap<Self::Key, Self::Value>;
    fn pending(p: &mut Pending) -> &mut Option<BTreeMap<Self::Key, Self::Value>>;
}

/// Namespaces: name → labels.
pub enum Namespaces {}
/// Pods: (namespace, name) → [`PodInfo`].
pub enum Pods {}
/// NetworkPolicies: (namespace, name) → policy.
pub enum Policies {}
/// Nodes: name → [`NodeInfo`].
pub enum Nodes {}

impl Kind for Namespaces {
    type Object = NamespaceWire;
    type Key = String;
    type Value = Labels;
    const NAME: &'static str = "namespaces";
    const BIT: u8 = 1;

    fn entry(obj: &NamespaceWire) -> Option<(String, Option<Labels>)> {
        let name = obj.metadata.name.clone()?;
        Some((name, Some(obj.metadata.labels.clone().unwrap_or_default())))
    }
    fn map(o: &mut Objects) -> &mut BTreeMap<String, Labels> {
        &mut o.state.namespaces
    }
    fn pending(p: &mut Pending) -> &mut Option<BTreeMap<String, Labels>> {
        &mut p.namespaces
    }
}

impl Kind for Pods {
    type Object = PodWire;
    type Key = (String, String);
    type Value = PodInfo;
    const NAME: &'static str = "pods";
    const BIT: u8 = 2;

    fn entry(obj: &PodWire) -> Option<((String, String), Option<PodInfo>)> {
        let info = manifests::pod_info(&obj.to_pod())?;
        let key = (info.namespace.clone(), info.name.clone());
        Some((key, (!obj.finished()).then_some(info)))
    }
    fn map(o: &mut Objects) -> &mut BTreeMap<(String, String), PodInfo> {
        &mut o.state.pods
    }
    fn pending(p: &mut Pending) -> &mut Option<BTreeMap<(String, String), PodInfo>> {
        &mut p.pods
    }
}

impl Kind for Policies {
    type Object = PolicyWire;
    type Key = (String, String);
    type Value = std::sync::Arc<NetworkPolicy>;
    const NAME: &'static str = "networkpolicies";
    const BIT: u8 = 4;

    /// Metadata is trimmed to name and namespace: the compiler reads nothing else, and a
    /// bumped resourceVersion alone must not look like a change.
    fn entry(obj: &PolicyWire) -> Option<((String, String), Option<std::sync::Arc<NetworkPolicy>>)> {
        let name = obj.metadata.name.clone()?;
        let ns = namespace_of(&obj.metadata);
        let policy = NetworkPolicy {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            spec: obj.spec.clone(),
        };
        Some(((ns, name), Some(std::sync::Arc::new(policy))))
    }
    fn map(o: &mut Objects) -> &mut BTreeMap<(String, String), std::sync::Arc<NetworkPolicy>> {
        &mut o.state.policies
    }
    fn pending(p: &mut Pending) -> &mut Option<BTreeMap<(String, String), std::sync::Arc<NetworkPolicy>>> {
        &mut p.policies
    }
}

impl Kind for Nodes {
    type Object = NodeWire;
    type Key = String;
    type Value = NodeInfo;
    const NAME: &'static str = "nodes";
    const BIT: u8 = 8;

    fn entry(obj: &NodeWire) -> Option<(String, Option<NodeInfo>)> {
        let info = manifests::node_info(&obj.to_node())?;
        Some((info.name.clone(), Some(info)))
    }
    fn map(o: &mut Objects) -> &mut BTreeMap<String, NodeInfo> {
        &mut o.nodes
    }
    fn pending(p: &mut Pending) -> &mut Option<BTreeMap<String, NodeInfo>> {
        &mut p.nodes
    }
}

/// Sets being re-listed (between `Init` and `InitDone`), one per kind.
#[derive(Default)]
pub struct Pending {
    namespaces: Option<BTreeMap<String, Labels>>,
    pods: Option<BTreeMap<(String, String), PodInfo>>,
    policies: Option<BTreeMap<(String, String), std::sync::Arc<NetworkPolicy>>>,
    nodes: Option<BTreeMap<String, NodeInfo>>,
}

const ALL_KINDS: u8 = Namespaces::BIT | Pods::BIT | Policies::BIT | Nodes::BIT;

/// The cluster as the watch streams have told it so far.
pub struct Store {
    objects: Objects,
    pending: Pending,
    /// Kinds whose first list is complete.
    listed: u8,
    /// Changed since the last [`Store::take_changed`]. Starts set, so the first complete
    /// view is always published, even when it equals the empty default.
    dirty: bool,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            objects: Objects::default(),
            pending: Pending::default(),
            listed: 0,
            dirty: true,
        }
    }
}

/// Insert or remove `key` in `map`; whether the map changed.
fn put<K: Ord, V: PartialEq>(map: &mut BTreeMap<K, V>, key: K, value: Option<V>) -> bool {
    match value {
        Some(v) => {
            if map.get(&key) == Some(&v) {
                return false;
            }
            map.insert(key, v);
            true
        }
        None => map.remove(&key).is_some(),
    }
}

impl Store {
    /// What the store holds now. During a kind's re-list this is still its previous set.
    pub fn objects(&self) -> &Objects {
        &self.objects
    }

    /// Whether every kind has been listed once: before that the view is partial (pods known,
    /// policies not yet), and publishing it could open pods up.
    pub fn is_complete(&self) -> bool {
        self.listed & ALL_KINDS == ALL_KINDS
    }

    /// An object was added or modified. Returns whether the model changed.
    pub fn apply<K: Kind>(&mut self, obj: &K::Object) -> bool {
        let Some((key, value)) = K::entry(obj) else {
            return false;
        };
        // The watcher never interleaves a change with a re-list; keep both sets right anyway.
        if let Some(p) = K::pending(&mut self.pending) {
            put(p, key.clone(), value.clone());
        }
        let changed = put(K::map(&mut self.objects), key, value);
        self.dirty |= changed;
        changed
    }

    /// An object was deleted. Returns whether the model changed.
    pub fn delete<K: Kind>(&mut self, obj: &K::Object) -> bool {
        let Some((key, _)) = K::entry(obj) else {
            return false;
        };
        if let Some(p) = K::pending(&mut self.pending) {
            p.remove(&key);
        }
        let changed = K::map(&mut self.objects).remove(&key).is_some();
        self.dirty |= changed;
        changed
    }

    /// A (re-)list starts: collect a fresh set, keeping the current one in force meanwhile.
    pub fn init_start<K: Kind>(&mut self) {
        *K::pending(&mut self.pending) = Some(BTreeMap::new());
    }

    /// An object of the list.
    pub fn init_apply<K: Kind>(&mut self, obj: &K::Object) {
        let Some((key, Some(value))) = K::entry(obj) else {
            return;
        };
        K::pending(&mut self.pending)
            .get_or_insert_with(BTreeMap::new)
            .insert(key, value);
    }

    /// The list is complete: it replaces the kind's set (what it lacks was deleted meanwhile).
    /// Returns whether the model changed.
    pub fn init_done<K: Kind>(&mut self) -> bool {
        let fresh = K::pending(&mut self.pending).take().unwrap_or_default();
        let map = K::map(&mut self.objects);
        let changed = *map != fresh;
        *map = fresh;
        self.listed |= K::BIT;
        self.dirty |= changed;
        changed
    }

    /// One watcher event. Returns whether the model changed.
    pub fn event<K: Kind>(&mut self, ev: watcher::Event<K::Object>) -> bool {
        match ev {
            watcher::Event::Apply(o) => self.apply::<K>(&o),
            watcher::Event::Delete(o) => self.delete::<K>(&o),
            watcher::Event::Init => {
                self.init_start::<K>();
                false
            }
            watcher::Event::InitApply(o) => {
                self.init_apply::<K>(&o);
                false
            }
            watcher::Event::InitDone => self.init_done::<K>(),
        }
    }

    /// The objects to publish, when the view is complete and changed since the last call.
    pub fn take_changed(&mut self) -> Option<Objects> {
        if !self.is_complete() || !self.dirty {
            return None;
        }
        self.dirty = false;
        Some(self.objects.clone())
    }
}

// ---------------------------------------------------------------------------------------
// I/O
// ---------------------------------------------------------------------------------------

/// The client configuration: the in-cluster one (service account token and CA,
/// `KUBERNETES_SERVICE_HOST`/`_PORT`) without a path, else the kubeconfig file's current
/// context. Async because a kubeconfig may name credential plugins.
pub async fn client_config(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Config> {
    match kubeconfig {
        None => kube::Config::incluster()
            .context("in-cluster Kubernetes configuration (KUBERNETES_SERVICE_HOST and the service account)"),
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading --kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("using --kubeconfig {}", path.display()))
        }
    }
}

/// A client from [`client_config`].
pub async fn client(kubeconfig: Option<&Path>) -> anyhow::Result<Client> {
    Client::try_from(client_config(kubeconfig).await?).context("creating the Kubernetes client")
}

/// Every object of a kind, page by page.
async fn list_all<K: Kind>(client: &Client) -> anyhow::Result<Vec<K::Object>> {
    let api: Api<K::Object> = Api::all(client.clone());
    let mut params = ListParams::default().limit(PAGE_SIZE);
    let mut out = Vec::new();
    loop {
        let page = api
            .list(&params)
            .await
            .with_context(|| format!("listing {}", K::NAME))?;
        out.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(out),
        }
    }
}

/// List everything once (start-up, before the node reconciles, so the first policy the
/// datapath sees is the cluster's).
pub async fn initial(client: &Client, node_name: &str) -> anyhow::Result<Objects> {
    let (namespaces, pods, policies, nodes) = tokio::try_join!(
        list_all::<Namespaces>(client),
        list_all::<Pods>(client),
        list_all::<Policies>(client),
        list_all::<Nodes>(client),
    )?;
    let mut store = Store::default();
    fn fill<K: Kind>(store: &mut Store, items: &[K::Object]) {
        store.init_start::<K>();
        for o in items {
            store.init_apply::<K>(o);
        }
        store.init_done::<K>();
    }
    fill::<Namespaces>(&mut store, &namespaces);
    fill::<Pods>(&mut store, &pods);
    fill::<Policies>(&mut store, &policies);
    fill::<Nodes>(&mut store, &nodes);
    let objects = store.objects().clone();
    if !objects.nodes.contains_key(node_name) {
        tracing::warn!(
            node = node_name,
            "this node is not among the cluster's Nodes: is --node-name (NODE_NAME) right?"
        );
    }
    tracing::info!(
        namespaces = objects.state.namespaces.len(),
        pods = objects.state.pods.len(),
        policies = objects.state.policies.len(),
        nodes = objects.nodes.len(),
        "listed the cluster"
    );
    Ok(objects)
}

/// Follow one kind forever: every event goes into the store; a change wakes the publisher.
async fn follow<K: Kind>(client: Client, store: Arc<Mutex<Store>>, changed: Arc<Notify>) {
    let api: Api<K::Object> = Api::all(client);
    let config = watcher::Config::default().page_size(PAGE_SIZE);
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut failing = false;
    while let Some(ev) = events.next().await {
        match ev {
            Ok(ev) => {
                if failing {
                    tracing::info!(kind = K::NAME, "watch recovered");
                    failing = false;
                }
                if store.lock().expect("kube store").event::<K>(ev) {
                    changed.notify_one();
                }
            }
            Err(e) => {
                // Retried with backoff by the watcher; the last known state stays in force.
                if failing {
                    tracing::debug!(kind = K::NAME, error = %e, "watch still failing");
                } else {
                    tracing::warn!(kind = K::NAME, error = %e, "watch failed: retrying, keeping the last known state");
                    failing = true;
                }
            }
        }
    }
}

/// Hand the store's objects to `publish` whenever they changed: after [`DEBOUNCE`] of quiet,
/// at most one publication at a time, and everything that changed during one is folded into
/// the next.
async fn publish_changes<F, Fut>(
    store: Arc<Mutex<Store>>,
    changed: Arc<Notify>,
    debounce: Duration,
    mut publish: F,
) where
    F: FnMut(Objects) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        changed.notified().await;
        // Let the burst settle: events keep arriving in the store meanwhile (the watch
        // loops run in their own tasks).
        tokio::time::sleep(debounce).await;
        let snapshot = store.lock().expect("kube store").take_changed();
        if let Some(objects) = snapshot {
            publish(objects).await;
        }
    }
}

/// The watch loops and the publisher, with the sink left open (tests publish into a channel).
/// Never returns; dropping it stops the watch tasks.
async fn watch_and_publish<F, Fut>(client: Client, debounce: Duration, publish: F)
where
    F: FnMut(Objects) -> Fut,
    Fut: Future<Output = ()>,
{
    let store = Arc::new(Mutex::new(Store::default()));
    let changed = Arc::new(Notify::new());
    // Each watch loop in its own task: a slow compilation or a policy lock held by a pod
    // registration delays only the publisher, never the reading of the streams. The JoinSet
    // aborts them when this future is dropped.
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(follow::<Namespaces>(
        client.clone(),
        store.clone(),
        changed.clone(),
    ));
    tasks.spawn(follow::<Pods>(client.clone(), store.clone(), changed.clone()));
    tasks.spawn(follow::<Policies>(client.clone(), store.clone(), changed.clone()));
    tasks.spawn(follow::<Nodes>(client, store.clone(), changed.clone()));
    publish_changes(store, changed, debounce, publish).await;
}

/// Watch the API server forever and apply every change to the node's policy. The watchers
/// list everything again first; nothing is applied until all four kinds are listed, so the
/// objects [`initial`] gave stay in force until a complete newer view replaces them.
pub async fn run(client: Client, node_name: String, node: Arc<SluiceNode>) {
    tracing::info!(node = %node_name, "watching the Kubernetes API");
    watch_and_publish(client, DEBOUNCE, move |objects| {
        let node = node.clone();
        async move { node.set_policy_objects(objects).await }
    })
    .await;
}

#[cfg(test)]
mod fake_api;
#[cfg(test)]
mod tests;
