use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use k8s_openapi::api::{
    core::v1::{Namespace, Node, Pod},
    networking::v1::NetworkPolicy,
};
use kube::runtime::watcher::Event;
use serde_json::{Value, json};
use sluice_policy::manifests::parse;

use super::{
    fake_api::{End, FakeApi, Reply},
    *,
};

/// What the API server sends for `obj`, decoded as the watcher decodes it.
fn wire<K: Kind>(obj: &impl serde::Serialize) -> K::Object {
    serde_json::from_value(serde_json::to_value(obj).expect("serialize")).expect("wire decode")
}

fn typed<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("a valid API object")
}

/// Fields the API server adds that sluice must ignore.
fn noise(rv: &str) -> Value {
    json!({
        "uid": "0b7c1a5e-0000-4000-8000-000000000001",
        "resourceVersion": rv,
        "generation": 3,
        "creationTimestamp": "2025-01-01T00:00:00Z",
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"big\": \"blob\"}"},
        "managedFields": [{"manager": "kubectl", "operation": "Apply", "apiVersion": "v1",
                           "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {}}}]
    })
}

fn with_noise(mut obj: Value, rv: &str) -> Value {
    let meta = obj["metadata"].as_object_mut().expect("metadata");
    for (k, v) in noise(rv).as_object().expect("noise") {
        meta.insert(k.clone(), v.clone());
    }
    obj
}

fn ns_x() -> Namespace {
    typed(with_noise(
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "x", "labels": {"team": "red", "kubernetes.io/metadata.name": "x"}},
               "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
        "11",
    ))
}

fn ns_y() -> Namespace {
    typed(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "y", "resourceVersion": "12"}}),
    )
}

fn pod_a() -> Pod {
    typed(with_noise(
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "a", "namespace": "x", "labels": {"app": "a"},
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "a-1",
                                                 "uid": "u1", "controller": true}]},
               "spec": {"nodeName": "n1", "restartPolicy": "Always",
                        "volumes": [{"name": "v", "emptyDir": {}}],
                        "containers": [
                            {"name": "c", "image": "busybox", "env": [{"name": "E", "value": "1"}],
                             "ports": [{"name": "serve-80-tcp", "containerPort": 80},
                                       {"name": "serve-81-udp", "containerPort": 81, "protocol": "UDP"},
                                       {"containerPort": 9000, "hostPort": 9000, "protocol": "SCTP"}]},
                            {"name": "sidecar", "image": "busybox"}]},
               "status": {"phase": "Running", "hostIP": "192.168.50.1", "podIP": "10.244.1.5",
                          "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00:10:244:1::5"}],
                          "conditions": [{"type": "Ready", "status": "True"}],
                          "containerStatuses": [{"name": "c", "image": "busybox", "imageID": "", "ready": true,
                                                 "restartCount": 0}]}}),
        "21",
    ))
}

fn pod_h() -> Pod {
    typed(json!({"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": "h", "namespace": "y", "resourceVersion": "22"},
                 "spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "busybox"}]},
                 "status": {"phase": "Running", "podIP": "192.168.50.1", "podIPs": [{"ip": "192.168.50.1"}]}}))
}

fn pod_pending() -> Pod {
    typed(json!({"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": "p", "namespace": "x", "labels": {"app": "p"}, "resourceVersion": "23"},
                 "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                 "status": {"phase": "Pending"}}))
}

fn policy_deny() -> NetworkPolicy {
    typed(with_noise(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": "deny", "namespace": "x", "labels": {"owner": "team-red"}},
               "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}),
        "31",
    ))
}

fn policy_web() -> NetworkPolicy {
    typed(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                 "metadata": {"name": "web", "namespace": "x", "resourceVersion": "32"},
                 "spec": {"podSelector": {"matchLabels": {"app": "a"}},
                          "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "red"}}},
                                                {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                                       "ports": [{"port": "serve-80-tcp"}, {"port": 81, "protocol": "UDP"}]}]}}),
    )
}

fn node_n1() -> Node {
    typed(with_noise(
        json!({"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}},
               "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"],
                        "taints": [{"key": "k", "effect": "NoSchedule"}]},
               "status": {"addresses": [{"type": "InternalIP", "address": "192.168.50.1"},
                                        {"type": "InternalIP", "address": "fd00::1"},
                                        {"type": "ExternalIP", "address": "203.0.113.1"},
                                        {"type": "Hostname", "address": "n1"}],
                          "images": [{"names": ["registry.example/some/image:1.0"], "sizeBytes": 1000}],
                          "conditions": [{"type": "Ready", "status": "True"}]}}),
        "41",
    ))
}

fn node_n2() -> Node {
    typed(json!({"apiVersion": "v1", "kind": "Node",
                 "metadata": {"name": "n2", "resourceVersion": "42"},
                 "spec": {"podCIDR": "10.244.2.0/24"},
                 "status": {"addresses": [{"type": "InternalIP", "address": "192.168.50.2"}]}}))
}

/// The same objects as a manifests directory would hold them (only what matters, written
/// independently of the objects above).
const SAME_AS_YAML: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: x
  labels: {team: red, kubernetes.io/metadata.name: x}
---
apiVersion: v1
kind: Namespace
metadata: {name: y}
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
    - {containerPort: 9000, protocol: SCTP}
  - {name: sidecar, image: busybox}
status:
  podIPs: [{ip: 10.244.1.5}, {ip: "fd00:10:244:1::5"}]
---
apiVersion: v1
kind: Pod
metadata: {name: h, namespace: y}
spec: {hostNetwork: true, containers: [{name: c, image: busybox}]}
status: {podIP: 192.168.50.1}
---
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: x, labels: {app: p}}
spec: {containers: [{name: c, image: busybox}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: red}}
    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
    ports:
    - {port: serve-80-tcp}
    - {port: 81, protocol: UDP}
---
apiVersion: v1
kind: Node
metadata: {name: n1}
spec: {podCIDRs: [10.244.1.0/24, "fd00:10:244:1::/64"]}
status:
  addresses:
  - {type: InternalIP, address: 192.168.50.1}
  - {type: InternalIP, address: "fd00::1"}
  - {type: Hostname, address: n1}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
spec: {podCIDR: 10.244.2.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.50.2}]}
"#;

/// A kind's whole list, as the watcher delivers it.
fn relist<K: Kind>(store: &mut Store, objects: Vec<K::Object>) -> bool {
    let mut changed = store.event::<K>(Event::Init);
    for o in objects {
        changed |= store.event::<K>(Event::InitApply(o));
    }
    changed | store.event::<K>(Event::InitDone)
}

fn listed_store() -> Store {
    let mut s = Store::default();
    relist::<Namespaces>(
        &mut s,
        vec![wire::<Namespaces>(&ns_x()), wire::<Namespaces>(&ns_y())],
    );
    relist::<Pods>(
        &mut s,
        vec![
            wire::<Pods>(&pod_a()),
            wire::<Pods>(&pod_h()),
            wire::<Pods>(&pod_pending()),
        ],
    );
    relist::<Policies>(
        &mut s,
        vec![wire::<Policies>(&policy_deny()), wire::<Policies>(&policy_web())],
    );
    relist::<Nodes>(&mut s, vec![wire::<Nodes>(&node_n1()), wire::<Nodes>(&node_n2())]);
    s
}

fn key(ns: &str, name: &str) -> (String, String) {
    (ns.to_owned(), name.to_owned())
}

#[test]
fn listed_objects_translate_like_manifests() {
    let expected = parse(SAME_AS_YAML).expect("YAML parses");
    assert_eq!(
        expected.state.pods.len(),
        3,
        "the YAML itself is what it means to be"
    );
    let s = listed_store();
    assert_eq!(s.objects(), &expected);
    // The conversions really ran (not two empty models).
    let a = &s.objects().state.pods[&key("x", "a")];
    assert_eq!(a.ips.len(), 2);
    assert_eq!(a.ports.len(), 3);
    assert!(s.objects().state.pods[&key("y", "h")].host_network);
    assert_eq!(s.objects().nodes["n1"].internal_ips.len(), 2);
}

#[test]
fn watch_events_translate_like_manifests() {
    // Everything listed empty, then every object arrives as a watch event.
    let mut s = Store::default();
    relist::<Namespaces>(&mut s, vec![]);
    relist::<Pods>(&mut s, vec![]);
    relist::<Policies>(&mut s, vec![]);
    relist::<Nodes>(&mut s, vec![]);
    assert!(s.event::<Namespaces>(Event::Apply(wire::<Namespaces>(&ns_x()))));
    assert!(s.event::<Namespaces>(Event::Apply(wire::<Namespaces>(&ns_y()))));
    for p in [pod_a(), pod_h(), pod_pending()] {
        assert!(s.event::<Pods>(Event::Apply(wire::<Pods>(&p))));
    }
    for p in [policy_deny(), policy_web()] {
        assert!(s.event::<Policies>(Event::Apply(wire::<Policies>(&p))));
    }
    for n in [node_n1(), node_n2()] {
        assert!(s.event::<Nodes>(Event::Apply(wire::<Nodes>(&n))));
    }
    assert_eq!(s.objects(), &parse(SAME_AS_YAML).expect("YAML parses"));
}

#[test]
fn apply_and_delete() {
    let mut s = listed_store();
    s.take_changed();
    // A status-only update (new resourceVersion, conditions, annotations): no change, so no
    // recompilation.
    let mut a = pod_a();
    a.metadata.resource_version = Some("99".into());
    a.metadata.annotations = Some([("k".to_owned(), "v".to_owned())].into());
    if let Some(st) = a.status.as_mut() {
        st.conditions = None;
    }
    assert!(!s.event::<Pods>(Event::Apply(wire::<Pods>(&a))));
    let mut deny = policy_deny();
    deny.metadata.resource_version = Some("100".into());
    assert!(!s.event::<Policies>(Event::Apply(wire::<Policies>(&deny))));
    assert!(s.take_changed().is_none(), "nothing to publish");

    // A label change is a change.
    a.metadata.labels = Some([("app".to_owned(), "b".to_owned())].into());
    assert!(s.event::<Pods>(Event::Apply(wire::<Pods>(&a))));
    assert_eq!(s.objects().state.pods[&key("x", "a")].labels["app"], "b");
    // Deletes; deleting what is not there changes nothing.
    assert!(s.event::<Pods>(Event::Delete(wire::<Pods>(&a))));
    assert!(!s.event::<Pods>(Event::Delete(wire::<Pods>(&a))));
    assert!(s.event::<Policies>(Event::Delete(wire::<Policies>(&deny))));
    assert!(s.event::<Namespaces>(Event::Delete(wire::<Namespaces>(&ns_y()))));
    assert!(s.event::<Nodes>(Event::Delete(wire::<Nodes>(&node_n2()))));
    let o = s.take_changed().expect("changed");
    assert!(!o.state.pods.contains_key(&key("x", "a")));
    assert!(!o.state.policies.contains_key(&key("x", "deny")));
    assert!(!o.state.namespaces.contains_key("y"));
    assert!(!o.nodes.contains_key("n2"));
    assert_eq!(o.state.policies.len(), 1);
}

#[test]
fn relist_after_an_outage_removes_what_vanished_and_keeps_the_rest() {
    let mut s = listed_store();
    s.take_changed();
    let before = s.objects().clone();

    // While the watch was down: pod a deleted, pod p got its address, pod q created, policy
    // web deleted. The watcher re-lists.
    let mut p = pod_pending();
    p.metadata.resource_version = Some("50".into());
    let st = p.status.get_or_insert_with(Default::default);
    st.phase = Some("Running".into());
    st.pod_ip = Some("10.244.1.9".into());
    let mut q = pod_pending();
    q.metadata.name = Some("q".into());
    assert!(!s.event::<Pods>(Event::Init));
    assert!(!s.event::<Pods>(Event::InitApply(wire::<Pods>(&pod_h()))));
    assert!(!s.event::<Pods>(Event::InitApply(wire::<Pods>(&p))));
    assert!(!s.event::<Pods>(Event::InitApply(wire::<Pods>(&q))));
    // Until InitDone the old set stays in force (a half-read list never reaches the
    // compiler).
    assert_eq!(s.objects(), &before);
    assert!(s.take_changed().is_none());
    assert!(s.event::<Pods>(Event::InitDone));
    let pods = &s.objects().state.pods;
    assert_eq!(
        pods.keys().cloned().collect::<Vec<_>>(),
        vec![key("x", "p"), key("x", "q"), key("y", "h")]
    );
    assert_eq!(
        pods[&key("x", "p")].ips,
        vec!["10.244.1.9".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(pods[&key("y", "h")], before.state.pods[&key("y", "h")]);

    assert!(relist::<Policies>(&mut s, vec![wire::<Policies>(&policy_deny())]));
    assert_eq!(s.objects().state.policies.len(), 1);
    // Other kinds untouched.
    assert_eq!(s.objects().state.namespaces, before.state.namespaces);
    assert_eq!(s.objects().nodes, before.nodes);
    // A re-list that finds everything as it was changes nothing.
    assert!(!relist::<Nodes>(
        &mut s,
        vec![wire::<Nodes>(&node_n1()), wire::<Nodes>(&node_n2())]
    ));
    assert!(s.take_changed().is_some());
}

#[test]
fn finished_pods_count_as_gone() {
    let mut s = listed_store();
    let mut a = pod_a();
    if let Some(st) = a.status.as_mut() {
        st.phase = Some("Succeeded".into());
    }
    assert!(s.event::<Pods>(Event::Apply(wire::<Pods>(&a))));
    assert!(!s.objects().state.pods.contains_key(&key("x", "a")));
    // Not listed either.
    relist::<Pods>(&mut s, vec![wire::<Pods>(&a), wire::<Pods>(&pod_h())]);
    assert_eq!(s.objects().state.pods.len(), 1);
    let mut h = pod_h();
    if let Some(st) = h.status.as_mut() {
        st.phase = Some("Failed".into());
    }
    assert!(s.event::<Pods>(Event::Apply(wire::<Pods>(&h))));
    assert!(s.objects().state.pods.is_empty());
}

#[test]
fn nothing_is_published_before_every_kind_is_listed() {
    let mut s = Store::default();
    relist::<Namespaces>(&mut s, vec![wire::<Namespaces>(&ns_x())]);
    relist::<Pods>(&mut s, vec![wire::<Pods>(&pod_a())]);
    relist::<Nodes>(&mut s, vec![]);
    assert!(!s.is_complete());
    assert!(
        s.take_changed().is_none(),
        "pods without their policies would open them up"
    );
    // The first complete view is published even when it is empty of changes.
    relist::<Policies>(&mut s, vec![]);
    assert!(s.is_complete());
    assert!(s.take_changed().is_some());
    assert!(s.take_changed().is_none());
    let mut empty = Store::default();
    relist::<Namespaces>(&mut empty, vec![]);
    relist::<Pods>(&mut empty, vec![]);
    relist::<Policies>(&mut empty, vec![]);
    relist::<Nodes>(&mut empty, vec![]);
    assert_eq!(empty.take_changed(), Some(Objects::default()));
}

#[test]
fn lean_decoding_tolerates_sparse_and_odd_objects() {
    // What a full k8s-openapi decode would reject (no containers, a port without number,
    // an address without type) still yields what can be used.
    let p: PodWire = serde_json::from_value(json!({
        "metadata": {"name": "s", "namespace": "x", "resourceVersion": "1"},
        "spec": {"containers": [{"ports": [{"name": "nameless"}, {"containerPort": 53, "protocol": "UDP"}]}]},
        "status": {"podIPs": [{}, {"ip": "10.0.0.1"}]}
    }))
    .expect("lean decode");
    let (k, v) = Pods::entry(&p).expect("entry");
    assert_eq!(k, key("x", "s"));
    let v = v.expect("value");
    assert_eq!(v.ports.len(), 1);
    assert_eq!(v.ips.len(), 1);
    let n: NodeWire = serde_json::from_value(json!({
        "metadata": {"name": "n"}, "status": {"addresses": [{"address": "1.2.3.4"}]}
    }))
    .expect("lean decode");
    assert!(
        Nodes::entry(&n)
            .expect("entry")
            .1
            .expect("value")
            .internal_ips
            .is_empty()
    );
    // No name: ignored.
    let nameless: NamespaceWire = serde_json::from_value(json!({"metadata": {}})).expect("decode");
    let mut s = Store::default();
    assert!(!s.apply::<Namespaces>(&nameless));
    // metadata: null
    let _: PolicyWire = serde_json::from_value(json!({"metadata": null})).expect("decode");
}

#[tokio::test]
async fn publisher_debounces_and_coalesces_without_blocking_the_store() {
    let store = Arc::new(Mutex::new(Store::default()));
    let changed = Arc::new(Notify::new());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let publisher = tokio::spawn(publish_changes(
        store.clone(),
        changed.clone(),
        Duration::from_millis(5),
        move |o: Objects| {
            let tx = tx.clone();
            async move {
                // A slow apply.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let _ = tx.send(o);
            }
        },
    ));
    {
        let mut s = store.lock().unwrap();
        relist::<Namespaces>(&mut s, vec![]);
        relist::<Pods>(&mut s, vec![]);
        relist::<Policies>(&mut s, vec![]);
        relist::<Nodes>(&mut s, vec![]);
    }
    changed.notify_one();
    // 200 namespaces in quick succession while applies are slow: the store takes each at
    // once (the lock is never held across an apply), the publisher folds them together.
    let started = std::time::Instant::now();
    for i in 0..200 {
        let ns: Namespace = typed(json!({"metadata": {"name": format!("n{i:03}"), "resourceVersion": "1"}}));
        assert!(
            store
                .lock()
                .unwrap()
                .apply::<Namespaces>(&wire::<Namespaces>(&ns))
        );
        changed.notify_one();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let mut published = Vec::new();
    let last = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let o: Objects = rx.recv().await.expect("publisher alive");
            let n = o.state.namespaces.len();
            published.push(n);
            if n == 200 {
                return o;
            }
        }
    })
    .await
    .expect("all changes published");
    publisher.abort();
    assert_eq!(last.state.namespaces.len(), 200);
    assert!(
        published.len() < 20,
        "200 changes must coalesce into a few publications, got {published:?}"
    );
    assert!(
        published.windows(2).all(|w| w[0] <= w[1]),
        "in order: {published:?}"
    );
}

#[tokio::test]
async fn client_config_from_a_kubeconfig_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(
        &path,
        r#"
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://192.0.2.10:6443", insecure-skip-tls-verify: true}
users:
- name: u
  user: {token: abc}
contexts:
- name: ctx
  context: {cluster: c, user: u, namespace: kube-system}
current-context: ctx
"#,
    )
    .unwrap();
    let cfg = client_config(Some(&path)).await.expect("kubeconfig");
    assert_eq!(cfg.cluster_url.to_string(), "https://192.0.2.10:6443/");
    assert_eq!(cfg.default_namespace, "kube-system");
    // Building the client needs no connection (rustls with ring, no OpenSSL).
    Client::try_from(cfg).expect("client");
    let missing = client_config(Some(&dir.path().join("absent"))).await;
    assert!(format!("{:#}", missing.expect_err("no file")).contains("--kubeconfig"));
}

// ---------------------------------------------------------------------------------------
// Against a fake API server
// ---------------------------------------------------------------------------------------

fn ns_json(name: &str, rv: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": name, "resourceVersion": rv, "labels": labels}})
}

fn list(kind: &str, rv: &str, items: Vec<Value>) -> Reply {
    Reply::Json(
        json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": rv}, "items": items}),
    )
}

fn ev(ty: &str, obj: Value) -> Value {
    json!({"type": ty, "object": obj})
}

/// The watchers against a scripted API server: namespaces change across a cut connection
/// (resume from the last resourceVersion) and a `410 Gone` (re-list, which must drop the
/// namespace deleted meanwhile); the other kinds come from their lists and a watch event.
#[tokio::test]
async fn watchers_resume_and_relist_against_a_fake_api_server() {
    let ns_lists = Arc::new(AtomicUsize::new(0));
    let api = {
        let ns_lists = ns_lists.clone();
        FakeApi::start(move |r| match (r.path.as_str(), r.is_watch()) {
            ("/api/v1/namespaces", false) => {
                // initial() and the watcher's first list see the state before the outage.
                if ns_lists.fetch_add(1, Ordering::SeqCst) < 2 {
                    list(
                        "NamespaceList",
                        "10",
                        vec![ns_json("a", "5", json!({"v": "1"})), ns_json("b", "6", json!({}))],
                    )
                } else {
                    // After the outage: b deleted, a relabelled, c and d there.
                    list(
                        "NamespaceList",
                        "20",
                        vec![
                            ns_json("a", "15", json!({"v": "2"})),
                            ns_json("c", "11", json!({})),
                            ns_json("d", "18", json!({})),
                        ],
                    )
                }
            }
            ("/api/v1/namespaces", true) => match r.resource_version() {
                // The first watch delivers c, then the connection is cut.
                Some("10") => Reply::Watch(vec![ev("ADDED", ns_json("c", "11", json!({})))], End::Cut),
                // Resumed from c's version; the server no longer has that history.
                Some("11") => Reply::Watch(
                    vec![ev(
                        "ERROR",
                        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                               "message": "too old resource version: 11 (19)", "reason": "Expired",
                               "code": 410}),
                    )],
                    End::Close,
                ),
                // After the re-list.
                Some("20") => Reply::Watch(
                    vec![ev("MODIFIED", ns_json("d", "21", json!({"v": "3"})))],
                    End::Hold,
                ),
                _ => Reply::Watch(vec![], End::Hold),
            },
            ("/api/v1/pods", false) => {
                let mut p = serde_json::to_value(pod_a()).unwrap();
                p["metadata"]["namespace"] = json!("a");
                list("PodList", "3", vec![p])
            }
            ("/api/v1/pods", true) => {
                let mut p = serde_json::to_value(pod_h()).unwrap();
                p["metadata"]["namespace"] = json!("a");
                p["metadata"]["resourceVersion"] = json!("4");
                Reply::Watch(vec![ev("ADDED", p)], End::Hold)
            }
            ("/apis/networking.k8s.io/v1/networkpolicies", false) => list(
                "NetworkPolicyList",
                "7",
                vec![serde_json::to_value(policy_deny()).unwrap()],
            ),
            ("/api/v1/nodes", false) => list("NodeList", "8", vec![serde_json::to_value(node_n1()).unwrap()]),
            (_, true) => Reply::Watch(vec![], End::Hold),
            (path, false) => Reply::Json(json!({"kind": "Status", "code": 404, "message": path})),
        })
        .await
    };

    let client = api.client();
    // The start-up path first.
    let first = tokio::time::timeout(Duration::from_secs(10), initial(&client, "n1"))
        .await
        .expect("initial list in time")
        .expect("initial list");
    assert_eq!(first.state.namespaces.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(first.state.pods.len(), 1);
    assert_eq!(first.state.policies.len(), 1);
    assert_eq!(first.nodes.len(), 1);

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Objects>();
    let watching = tokio::spawn(watch_and_publish(client, Duration::from_millis(5), move |o| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(o);
        }
    }));
    let labels = |v: &str| -> Labels { [("v".to_owned(), v.to_owned())].into() };
    let mut published = Vec::new();
    let converged = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(o) = rx.recv().await {
            published.push(o.clone());
            let ns = &o.state.namespaces;
            if ns.keys().collect::<Vec<_>>() == ["a", "c", "d"]
                && ns["a"] == labels("2")
                && ns["d"] == labels("3")
                && o.state.pods.len() == 2
            {
                return o;
            }
        }
        panic!("publisher ended")
    })
    .await;
    watching.abort();
    let requests: Vec<(bool, Option<String>)> = api
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v1/namespaces")
        .map(|r| (r.is_watch(), r.resource_version().map(str::to_owned)))
        .collect();
    let o = converged.unwrap_or_else(|_| {
        panic!("did not converge in 30 s; namespace requests {requests:?}, published {published:?}")
    });

    // Pods from the list and from the watch, through the lean decoding.
    assert!(o.state.pods.contains_key(&key("a", "a")) && o.state.pods.contains_key(&key("a", "h")));
    assert_eq!(o.state.policies.len(), 1);
    assert_eq!(o.nodes["n1"].pod_cidrs.len(), 2);
    // Every publication was a complete view: never pods without their policy.
    assert!(
        published
            .iter()
            .all(|p| p.state.policies.len() == 1 && p.nodes.len() == 1)
    );
    // The namespace requests after the start-up list: list (rv 10), watch from 10 (cut),
    // resume from 11 (the last event's version), 410 → list again (rv 20), watch from 20.
    let watches: Vec<&str> = requests
        .iter()
        .filter(|(w, _)| *w)
        .filter_map(|(_, rv)| rv.as_deref())
        .collect();
    assert_eq!(watches, ["10", "11", "20"], "namespace requests: {requests:?}");
    assert_eq!(
        requests.iter().filter(|(w, _)| !w).count(),
        3,
        "initial(), the watcher's list, its re-list: {requests:?}"
    );
    assert_eq!(ns_lists.load(Ordering::SeqCst), 3);
}
