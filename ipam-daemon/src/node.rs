//! The node's state and the operations of the local API. One `Node` per daemon: it owns the
//! address pools and leases, the durable store, the datapath and the host netlink handle, and
//! keeps the three in agreement (store first, then datapath, so that a crash at any point is
//! repaired by `reconcile` at the next start).

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use sluice_api::{
    ApiError, Attachment, ErrorKind, GcReport, Inspection, LeaseInfo, PodRef, PoolStatus, Released,
};
use sluice_common::endpoint::{EP_F_HAS_V4, EP_F_HAS_V6, LocalEndpoint};

use crate::{
    cli::Config,
    datapath::{Datapath, maps::ip128},
    hostnet::HostNet,
    ipam::{Ipam, IpamError, Lease},
    locks::AttachmentLocks,
    store::{AttachmentRecord, EndpointRecord, Store},
};

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn api_err(kind: ErrorKind, message: impl Into<String>) -> ApiError {
    ApiError {
        kind,
        message: message.into(),
    }
}

/// An error and its sources, `outer: inner: innermost`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

fn internal(e: impl std::error::Error) -> ApiError {
    api_err(ErrorKind::Internal, chain(&e))
}

impl From<IpamError> for ApiError {
    fn from(e: IpamError) -> Self {
        let kind = if e.is_exhausted() {
            ErrorKind::PoolExhausted
        } else {
            ErrorKind::AddressUnavailable
        };
        api_err(kind, e.to_string())
    }
}

pub fn format_mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut m = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return None;
        }
        m[i] = u8::from_str_radix(p, 16).ok()?;
    }
    Some(m)
}

/// Endpoint slots (`ep_id`): indexes into the per-endpoint counter array and the first field
/// of policy keys. The smallest free slot is reused.
#[derive(Default)]
pub struct Slots {
    used: std::collections::BTreeSet<u32>,
}

impl Slots {
    pub fn take(&mut self, max: u32) -> Option<u32> {
        let id = (0..max).find(|i| !self.used.contains(i))?;
        self.used.insert(id);
        Some(id)
    }
    pub fn mark(&mut self, id: u32) {
        self.used.insert(id);
    }
    pub fn free(&mut self, id: u32) {
        self.used.remove(&id);
    }
}

pub struct Node {
    pub cfg: Config,
    pub started: Instant,
    pub ipam: Mutex<Ipam>,
    /// Mirror of the store: every attachment the daemon knows.
    pub records: Mutex<HashMap<Attachment, AttachmentRecord>>,
    pub slots: Mutex<Slots>,
    pub store: Store,
    pub datapath: std::sync::Arc<Datapath>,
    /// Endpoints still on their first (clsact) attachment, to move to tcx links when idle.
    pub tcx_pending: Mutex<std::collections::BTreeMap<u32, String>>,
    pub tcx_wake: tokio::sync::Notify,
    pub hostnet: HostNet,
    pub gateways: Vec<IpAddr>,
    pub mtu: u32,
    pub locks: AttachmentLocks,
    pub ready: AtomicBool,
    pub node_name: String,
    /// Live conntrack entries at the last garbage collection.
    pub ct_live: std::sync::atomic::AtomicU64,
    /// NetworkPolicy: the model, the compiler's state and what the maps hold. Register and
    /// policy changes take this lock, so a new endpoint's isolation and a policy update are
    /// never written half-way past each other.
    pub policy: tokio::sync::Mutex<crate::policy::PolicyEngine>,
    /// Names of the policies by reference (for events), refreshed after every apply.
    pub policy_names: std::sync::RwLock<Vec<String>>,
    /// Object updates applied (see `set_policy_objects`).
    pub policy_revision: std::sync::atomic::AtomicU64,
    /// When an ADD/DEL-related request was last served (tcx moves wait for quiet).
    pub activity: Mutex<Instant>,
    pub metrics: crate::metrics::Recorded,
    /// Routes to other nodes' pods, kept in line with the Node objects.
    pub routing: tokio::sync::Mutex<crate::routing::Routing>,
    /// When each in-flight ADD allocated (its duration is observed at register).
    pub add_started: Mutex<HashMap<Attachment, Instant>>,
}

impl Node {
    /// `namespace/name` of the pod behind an endpoint slot (else its container id).
    pub fn endpoint_name(&self, ep_id: u32) -> Option<String> {
        let recs = self.records.lock().expect("records");
        recs.values()
            .find(|r| r.endpoint.as_ref().is_some_and(|e| e.ep_id == ep_id))
            .map(|r| match &r.pod {
                Some(p) => format!("{}/{}", p.namespace, p.name),
                None => r.attachment.container_id.clone(),
            })
    }

    /// Name of the policy behind a policy reference (empty when none).
    pub fn policy_name(&self, policy_ref: u32) -> String {
        self.policy_names
            .read()
            .expect("policy names")
            .get(policy_ref as usize)
            .cloned()
            .unwrap_or_default()
    }

    /// The endpoint slot of a pod on this node.
    pub fn endpoint_of_pod(&self, pod: &PodRef) -> Option<u32> {
        let recs = self.records.lock().expect("records");
        recs.values()
            .find(|r| r.pod.as_ref() == Some(pod))
            .and_then(|r| r.endpoint.as_ref().map(|e| e.ep_id))
    }

    /// This node's endpoints, as the policy compiler sees them.
    pub fn policy_endpoints(&self) -> Vec<sluice_policy::compile::LocalEndpoint> {
        let recs = self.records.lock().expect("records");
        recs.values()
            .filter_map(|r| {
                let ep = r.endpoint.as_ref()?;
                let (namespace, name) = match &r.pod {
                    Some(p) => (p.namespace.clone(), p.name.clone()),
                    None => ("default".to_owned(), r.attachment.container_id.clone()),
                };
                Some(sluice_policy::compile::LocalEndpoint {
                    ep_id: ep.ep_id,
                    namespace,
                    name,
                    ips: r.ips.clone(),
                })
            })
            .collect()
    }

    /// Recompile policy for the current endpoints and write the difference (caller holds the
    /// policy lock).
    pub fn apply_policy(&self, engine: &mut crate::policy::PolicyEngine) -> Result<(), ApiError> {
        let eps = self.policy_endpoints();
        let res = engine
            .apply(&self.datapath.maps, &eps, &self.gateways)
            .map(|_| ());
        *self.policy_names.write().expect("policy names") = engine
            .compiled
            .policies
            .iter()
            .map(|(ns, n)| format!("{ns}/{n}"))
            .collect();
        res
    }

    /// New cluster objects from a source (manifests, the API server): apply them.
    pub async fn set_policy_objects(&self, objects: sluice_policy::manifests::Objects) {
        // Nodes first: routes to new nodes' pods exist before policy lets traffic to them.
        self.routing
            .lock()
            .await
            .sync(&objects.nodes, &self.hostnet, &self.datapath)
            .await;
        let mut engine = self.policy.lock().await;
        engine.objects = objects;
        let started = Instant::now();
        match self.apply_policy(&mut engine) {
            Ok(()) => tracing::info!(
                ms = started.elapsed().as_secs_f64() * 1e3,
                policies = engine.stats.policies,
                entries = engine.stats.entries,
                added = engine.stats.entries_added,
                removed = engine.stats.entries_removed,
                identities = engine.stats.identities,
                "policy updated"
            ),
            Err(e) => tracing::error!(error = %e.message, "policy update not applied"),
        }
        self.policy_revision
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Note that a request is being served now.
    pub fn touch(&self) {
        *self.activity.lock().expect("activity") = Instant::now();
    }

    pub fn last_activity(&self) -> Instant {
        *self.activity.lock().expect("activity")
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    fn persist(&self, rec: &AttachmentRecord) -> Result<(), ApiError> {
        self.store.put(rec).map_err(internal)?;
        self.records
            .lock()
            .expect("records")
            .insert(rec.attachment.clone(), rec.clone());
        Ok(())
    }

    fn forget_record(&self, a: &Attachment) -> Result<(), ApiError> {
        self.store.remove(a).map_err(internal)?;
        self.records.lock().expect("records").remove(a);
        Ok(())
    }

    pub fn record(&self, a: &Attachment) -> Option<AttachmentRecord> {
        self.records.lock().expect("records").get(a).cloned()
    }

    // ---- leases ----------------------------------------------------------------------

    /// Lease addresses to an attachment (idempotent), durably.
    pub async fn allocate(
        &self,
        a: &Attachment,
        pod: Option<PodRef>,
        requested: &[IpAddr],
    ) -> Result<sluice_api::Allocation, ApiError> {
        let _g = self.locks.lock(a).await;
        let (lease, new) = self
            .ipam
            .lock()
            .expect("ipam")
            .allocate(a, pod.clone(), requested, now_unix())?;
        if new {
            let rec = AttachmentRecord {
                attachment: a.clone(),
                pod,
                ips: lease.ips.clone(),
                allocated_at: lease.allocated_at,
                endpoint: None,
            };
            if let Err(e) = self.persist(&rec) {
                self.ipam.lock().expect("ipam").forget(a);
                return Err(e);
            }
            tracing::info!(attachment = %a, ips = ?lease.ips, "allocated");
        }
        let ips = self.ipam.lock().expect("ipam").assignments(&lease.ips);
        Ok(sluice_api::Allocation { ips, mtu: self.mtu })
    }

    /// Release an attachment's addresses (only when it has no endpoint any more).
    async fn release_locked(&self, a: &Attachment) -> Result<Released, ApiError> {
        let rec = self.record(a);
        if rec.as_ref().is_some_and(|r| r.endpoint.is_some()) {
            return Err(api_err(
                ErrorKind::BadRequest,
                format!("{a} is still registered: deregister it first (or use teardown)"),
            ));
        }
        if rec.is_some() {
            self.forget_record(a)?;
        }
        let addresses = self.ipam.lock().expect("ipam").release(a);
        if !addresses.is_empty() {
            tracing::info!(attachment = %a, ips = ?addresses, "released");
        }
        Ok(Released { addresses })
    }

    pub async fn release(&self, a: &Attachment) -> Result<Released, ApiError> {
        let _g = self.locks.lock(a).await;
        self.release_locked(a).await
    }

    // ---- endpoints -------------------------------------------------------------------

    /// Wire the datapath for a registered veth: maps, programs, host routes. Returns once
    /// traffic can flow (and policy, once it exists, is in force).
    pub async fn register(
        &self,
        req: &sluice_api::RegisterEndpoint,
    ) -> Result<sluice_api::Registered, ApiError> {
        let a = &req.attachment;
        let _g = self.locks.lock(a).await;
        let Some(mut rec) = self.record(a) else {
            return Err(api_err(
                ErrorKind::UnknownAttachment,
                format!("{a} holds no lease: allocate first"),
            ));
        };
        if req.ips.iter().any(|ip| !rec.ips.contains(ip)) {
            return Err(api_err(
                ErrorKind::BadRequest,
                format!("{a} leases {:?}, not {:?}", rec.ips, req.ips),
            ));
        }
        let pod_mac = parse_mac(&req.pod_mac)
            .ok_or_else(|| api_err(ErrorKind::BadRequest, format!("bad MAC {:?}", req.pod_mac)))?;
        let link = self
            .hostnet
            .link(&req.host_ifname)
            .await
            .map_err(|e| api_err(ErrorKind::Netlink, chain(&e)))?
            .ok_or_else(|| {
                api_err(
                    ErrorKind::Netlink,
                    format!("host interface {} does not exist", req.host_ifname),
                )
            })?;
        let mut policy = self.policy.lock().await;
        if let Some(ep) = &rec.endpoint {
            if ep.host_ifindex == link.index && ep.host_ifname == req.host_ifname {
                // Same veth registered again (a retried ADD): make sure it is all in place.
                self.apply_policy(&mut policy)?;
                self.wire(&rec, ep, &policy).await?;
                return Ok(sluice_api::Registered {
                    ep_id: ep.ep_id,
                    host_ifindex: ep.host_ifindex,
                    host_mac: ep.host_mac.clone(),
                });
            }
            // Another veth took its place: drop the old wiring first.
            let old = ep.clone();
            self.unwire(&rec, &old).await?;
            self.slots.lock().expect("slots").free(old.ep_id);
        }
        let ep_id = self
            .slots
            .lock()
            .expect("slots")
            .take(self.datapath.maps.sizes.endpoints)
            .ok_or_else(|| api_err(ErrorKind::Datapath, "endpoint map is full (--max-endpoints)"))?;
        let ep = EndpointRecord {
            ep_id,
            host_ifname: req.host_ifname.clone(),
            host_ifindex: link.index,
            host_mac: format_mac(&link.mac),
            pod_mac: format_mac(&pod_mac),
            netns: req.netns.clone(),
            registered_at: now_unix(),
        };
        rec.endpoint = Some(ep.clone());
        if req.pod.is_some() {
            rec.pod = req.pod.clone();
        }
        // Durable first: a crash after this point is repaired by reconcile (it re-wires a
        // live veth or unwires a vanished one).
        if let Err(e) = self.persist(&rec) {
            self.slots.lock().expect("slots").free(ep_id);
            return Err(e);
        }
        // Policy first (the new pod's isolation and everyone's entries for its identity),
        // then the endpoint: its first packet already meets its policy.
        let wired = match self.apply_policy(&mut policy) {
            Ok(()) => self.wire(&rec, &ep, &policy).await,
            Err(e) => Err(e),
        };
        if let Err(e) = wired {
            let _ = self.unwire(&rec, &ep).await;
            rec.endpoint = None;
            let _ = self.persist(&rec);
            self.slots.lock().expect("slots").free(ep_id);
            let _ = self.apply_policy(&mut policy);
            return Err(e);
        }
        drop(policy);
        tracing::info!(attachment = %a, ifname = %ep.host_ifname, ep_id, ips = ?rec.ips, "registered");
        Ok(sluice_api::Registered {
            ep_id,
            host_ifindex: link.index,
            host_mac: ep.host_mac,
        })
    }

    /// The datapath record of an endpoint (identity and isolation from the latest policy).
    pub fn local_endpoint(
        &self,
        rec: &AttachmentRecord,
        ep: &EndpointRecord,
        policy: &crate::policy::PolicyEngine,
    ) -> Vec<(IpAddr, LocalEndpoint)> {
        let (flags, identities) = policy.endpoint_flags(ep.ep_id);
        let base = self.local_endpoint_base(rec, ep);
        rec.ips
            .iter()
            .map(|ip| {
                let mut le = base;
                le.flags |= flags;
                le.identity = identities.get(ip).copied().unwrap_or(0);
                (*ip, le)
            })
            .collect()
    }

    /// The datapath record of an endpoint without policy (flags of addresses only).
    pub fn local_endpoint_base(&self, rec: &AttachmentRecord, ep: &EndpointRecord) -> LocalEndpoint {
        let mut le = LocalEndpoint {
            ifindex: ep.host_ifindex,
            ep_id: ep.ep_id,
            identity: 0,
            flags: 0,
            pod_mac: parse_mac(&ep.pod_mac).unwrap_or_default(),
            host_mac: parse_mac(&ep.host_mac).unwrap_or_default(),
            ipv4: 0,
            ipv6: Default::default(),
        };
        for ip in &rec.ips {
            match ip {
                IpAddr::V4(_) => {
                    le.ipv4 = ip128(*ip).v4_raw();
                    le.flags |= EP_F_HAS_V4;
                }
                IpAddr::V6(_) => {
                    le.ipv6 = ip128(*ip);
                    le.flags |= EP_F_HAS_V6;
                }
            }
        }
        le
    }

    fn gateway_for(&self, ip: &IpAddr) -> Option<IpAddr> {
        self.gateways
            .iter()
            .find(|g| g.is_ipv4() == ip.is_ipv4())
            .copied()
    }

    /// Put an endpoint's datapath state in place (idempotent).
    async fn wire(
        &self,
        rec: &AttachmentRecord,
        ep: &EndpointRecord,
        policy: &crate::policy::PolicyEngine,
    ) -> Result<(), ApiError> {
        let dp = |e: crate::datapath::DatapathError| api_err(ErrorKind::Datapath, chain(&e));
        let les = self.local_endpoint(rec, ep, policy);
        self.datapath.maps.reset_stats(ep.ep_id).map_err(dp)?;
        self.datapath.maps.put_endpoint(&les).map_err(dp)?;
        crate::attach::first_attach(self, &ep.host_ifname, ep.host_ifindex).await?;
        for ip in &rec.ips {
            self.hostnet
                .add_pod_route(*ip, ep.host_ifindex, self.gateway_for(ip))
                .await
                .map_err(|e| api_err(ErrorKind::Netlink, chain(&e)))?;
        }
        Ok(())
    }

    /// Remove an endpoint's datapath state, continuing past errors; the first one is returned.
    async fn unwire(&self, rec: &AttachmentRecord, ep: &EndpointRecord) -> Result<(), ApiError> {
        let mut first: Option<ApiError> = None;
        for ip in &rec.ips {
            if let Err(e) = self.hostnet.del_pod_route(*ip, ep.host_ifindex).await {
                first.get_or_insert(api_err(ErrorKind::Netlink, chain(&e)));
            }
        }
        // Only remove address entries that still point at this endpoint's interface.
        let mine: Vec<IpAddr> = rec
            .ips
            .iter()
            .copied()
            .filter(|ip| {
                self.datapath
                    .maps
                    .endpoint_by_ip(*ip)
                    .is_none_or(|e| e.ifindex == ep.host_ifindex)
            })
            .collect();
        if let Err(e) = self.datapath.maps.remove_endpoint(ep.host_ifindex, &mine) {
            first.get_or_insert(api_err(ErrorKind::Datapath, chain(&e)));
        }
        if let Err(e) = crate::attach::detach(self, ep.host_ifindex).await {
            first.get_or_insert(e);
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn deregister_locked(&self, a: &Attachment) -> Result<(), ApiError> {
        let Some(mut rec) = self.record(a) else {
            return Ok(());
        };
        let Some(ep) = rec.endpoint.clone() else {
            return Ok(());
        };
        self.unwire(&rec, &ep).await?;
        rec.endpoint = None;
        self.persist(&rec)?;
        self.slots.lock().expect("slots").free(ep.ep_id);
        let mut policy = self.policy.lock().await;
        if let Err(e) = self.apply_policy(&mut policy) {
            tracing::warn!(error = %e.message, "policy after deregister");
        }
        drop(policy);
        tracing::info!(attachment = %a, ifname = %ep.host_ifname, "deregistered");
        Ok(())
    }

    pub async fn deregister(&self, a: &Attachment) -> Result<(), ApiError> {
        let _g = self.locks.lock(a).await;
        self.deregister_locked(a).await
    }

    /// Deregister and release: everything a CNI DEL needs from the daemon.
    pub async fn teardown(&self, a: &Attachment) -> Result<Released, ApiError> {
        let _g = self.locks.lock(a).await;
        self.deregister_locked(a).await?;
        self.release_locked(a).await
    }

    /// What the daemon knows of an attachment, and whether its datapath is intact.
    pub async fn inspect(&self, a: &Attachment) -> Result<Inspection, ApiError> {
        let _g = self.locks.lock(a).await;
        let Some(rec) = self.record(a) else {
            return Err(api_err(
                ErrorKind::UnknownAttachment,
                format!("{a} is not known to sluiced"),
            ));
        };
        let mut problems = Vec::new();
        let endpoint = match &rec.endpoint {
            Some(ep) => {
                let le = self.local_endpoint_base(&rec, ep);
                match self.datapath.maps.endpoint_by_ifindex(ep.host_ifindex) {
                    Some(m) if m.pod_mac == le.pod_mac && m.ep_id == le.ep_id => {}
                    Some(_) => {
                        problems.push(format!("datapath entry of ifindex {} differs", ep.host_ifindex))
                    }
                    None => problems.push(format!("no datapath entry for ifindex {}", ep.host_ifindex)),
                }
                for ip in &rec.ips {
                    if self.datapath.maps.endpoint_by_ip(*ip).map(|e| e.ifindex) != Some(ep.host_ifindex) {
                        problems.push(format!("no datapath entry for {ip}"));
                    }
                    match self.hostnet.has_pod_route(*ip, ep.host_ifindex).await {
                        Ok(true) => {}
                        Ok(false) => problems.push(format!("no host route to {ip} via {}", ep.host_ifname)),
                        Err(e) => problems.push(e.to_string()),
                    }
                }
                if !crate::attach::is_attached(self, ep.host_ifindex).await {
                    problems.push(format!("programs not attached to {}", ep.host_ifname));
                }
                match self.hostnet.link(&ep.host_ifname).await {
                    Ok(Some(l)) if l.index == ep.host_ifindex => {}
                    Ok(_) => problems.push(format!("host interface {} is gone", ep.host_ifname)),
                    Err(e) => problems.push(e.to_string()),
                }
                Some(self.endpoint_info(&rec, ep))
            }
            None => {
                problems.push("not registered".into());
                None
            }
        };
        Ok(Inspection {
            attachment: a.clone(),
            ips: rec.ips.clone(),
            endpoint,
            datapath_ok: problems.is_empty(),
            problems,
        })
    }

    pub fn endpoint_info(&self, rec: &AttachmentRecord, ep: &EndpointRecord) -> sluice_api::EndpointInfo {
        let s = self.datapath.maps.stats(ep.ep_id);
        let live = self.datapath.maps.endpoint_by_ifindex(ep.host_ifindex);
        sluice_api::EndpointInfo {
            attachment: rec.attachment.clone(),
            pod: rec.pod.clone(),
            ep_id: ep.ep_id,
            host_ifname: ep.host_ifname.clone(),
            host_ifindex: ep.host_ifindex,
            pod_mac: ep.pod_mac.clone(),
            ips: rec.ips.clone(),
            identity: live.map(|l| l.identity).unwrap_or(0),
            ingress_isolated: live
                .is_some_and(|l| l.flags & sluice_common::endpoint::EP_F_INGRESS_ISOLATED != 0),
            egress_isolated: live
                .is_some_and(|l| l.flags & sluice_common::endpoint::EP_F_EGRESS_ISOLATED != 0),
            counters: sluice_api::EndpointCounters {
                tx_packets: s.tx_packets,
                tx_bytes: s.tx_bytes,
                rx_packets: s.rx_packets,
                rx_bytes: s.rx_bytes,
                tx_redirected: s.tx_redirected,
                neigh_replies: s.neigh_replies,
                drops: crate::datapath::maps::drops_by_name(&s),
            },
        }
    }

    pub fn endpoints(&self) -> Vec<sluice_api::EndpointInfo> {
        let recs: Vec<AttachmentRecord> = self.records.lock().expect("records").values().cloned().collect();
        let mut out: Vec<_> = recs
            .iter()
            .filter_map(|r| r.endpoint.as_ref().map(|ep| self.endpoint_info(r, ep)))
            .collect();
        out.sort_by_key(|e| e.ep_id);
        out
    }

    pub fn leases(&self) -> Vec<LeaseInfo> {
        let ipam = self.ipam.lock().expect("ipam");
        let mut out: Vec<LeaseInfo> = ipam
            .leases()
            .flat_map(|(a, l): (&Attachment, &Lease)| {
                l.ips.iter().map(move |ip| LeaseInfo {
                    address: *ip,
                    attachment: a.clone(),
                    pod: l.pod.clone(),
                    allocated_at: l.allocated_at,
                })
            })
            .collect();
        out.sort_by_key(|l| l.address);
        out
    }

    pub fn pool_status(&self) -> Vec<PoolStatus> {
        let ipam = self.ipam.lock().expect("ipam");
        ipam.pools()
            .iter()
            .map(|p| PoolStatus {
                cidr: p.cidr().to_string(),
                gateway: p.gateway(),
                used: p.used() as u64,
                free: u64::try_from(p.free()).unwrap_or(u64::MAX),
            })
            .collect()
    }

    /// CNI GC: release everything not in `valid`, continuing past errors.
    pub async fn gc(&self, valid: &[Attachment]) -> GcReport {
        let keep: std::collections::HashSet<&Attachment> = valid.iter().collect();
        let all: Vec<Attachment> = self.records.lock().expect("records").keys().cloned().collect();
        let mut report = GcReport::default();
        for a in all.into_iter().filter(|a| !keep.contains(a)) {
            match self.teardown(&a).await {
                Ok(_) => report.released.push(a),
                Err(e) => report.errors.push(format!("{a}: {}", e.message)),
            }
        }
        if !report.released.is_empty() {
            tracing::info!(
                released = report.released.len(),
                errors = report.errors.len(),
                "gc"
            );
        }
        report
    }

    // ---- start-up --------------------------------------------------------------------

    /// Rebuild memory from the store and bring the datapath in line with it: re-wire live
    /// endpoints, tear down endpoints whose veth vanished while the daemon was away (their
    /// pods are gone), release stale unregistered leases, and remove datapath leftovers that
    /// no record explains. Returns a summary for the log.
    pub async fn reconcile(&self) -> BTreeMap<&'static str, usize> {
        let mut summary = BTreeMap::new();
        let recs = match self.store.load_all() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the state store");
                return summary;
            }
        };
        {
            let mut ipam = self.ipam.lock().expect("ipam");
            let mut slots = self.slots.lock().expect("slots");
            let mut records = self.records.lock().expect("records");
            for r in &recs {
                let outside = ipam.restore(
                    r.attachment.clone(),
                    Lease {
                        ips: r.ips.clone(),
                        pod: r.pod.clone(),
                        allocated_at: r.allocated_at,
                    },
                );
                if !outside.is_empty() {
                    tracing::warn!(attachment = %r.attachment, ips = ?outside, "lease lies outside today's pod CIDRs: kept for its pod, not reusable");
                }
                if let Some(ep) = &r.endpoint {
                    slots.mark(ep.ep_id);
                }
                records.insert(r.attachment.clone(), r.clone());
            }
        }
        *summary.entry("records").or_default() += recs.len();
        let mut policy = self.policy.lock().await;
        if let Err(e) = self.apply_policy(&mut policy) {
            tracing::error!(error = %e.message, "policy at start-up");
        }

        let mut live_ifindexes = std::collections::HashSet::new();
        for r in &recs {
            match &r.endpoint {
                Some(ep) => {
                    let link = self.hostnet.link(&ep.host_ifname).await.ok().flatten();
                    match link {
                        Some(l) if l.index == ep.host_ifindex => {
                            if let Err(e) = self.wire(r, ep, &policy).await {
                                tracing::error!(attachment = %r.attachment, error = %e.message, "re-wiring endpoint");
                            }
                            live_ifindexes.insert(ep.host_ifindex);
                            *summary.entry("endpoints_kept").or_default() += 1;
                        }
                        _ => {
                            tracing::info!(attachment = %r.attachment, ifname = %ep.host_ifname, "veth vanished while sluiced was away: releasing");
                            drop(policy);
                            let torn = self.teardown(&r.attachment).await;
                            policy = self.policy.lock().await;
                            if let Err(e) = torn {
                                tracing::error!(attachment = %r.attachment, error = %e.message, "teardown");
                            }
                            *summary.entry("endpoints_gone").or_default() += 1;
                        }
                    }
                }
                None => {
                    // A lease without an endpoint: an ADD that never completed. Its veth, if
                    // the ADD got that far, is named after the attachment.
                    let ifname = sluice_api::host_ifname(&r.attachment.container_id, &r.attachment.ifname);
                    let veth = self.hostnet.link(&ifname).await.ok().flatten();
                    let age = now_unix().saturating_sub(r.allocated_at);
                    if veth.is_none() && age > self.cfg.stale_lease_after.as_secs() {
                        drop(policy);
                        let _ = self.release(&r.attachment).await;
                        policy = self.policy.lock().await;
                        *summary.entry("stale_leases_released").or_default() += 1;
                    }
                }
            }
        }
        if let Err(e) = self.apply_policy(&mut policy) {
            tracing::error!(error = %e.message, "policy after reconcile");
        }
        drop(policy);
        // Datapath leftovers no record explains (a crash between steps of a teardown).
        for ifindex in self.datapath.attached_interfaces() {
            if !live_ifindexes.contains(&ifindex) {
                let _ = self.datapath.detach(ifindex);
                *summary.entry("orphan_links_removed").or_default() += 1;
            }
        }
        for (ifindex, ep) in self.datapath.maps.all_ifaces() {
            if !live_ifindexes.contains(&ifindex) {
                let _ = self.datapath.maps.remove_endpoint(ifindex, &[]);
                let _ = ep;
                *summary.entry("orphan_entries_removed").or_default() += 1;
            }
        }
        for (ip, ep) in self.datapath.maps.all_endpoint_addrs() {
            if !live_ifindexes.contains(&ep.ifindex) {
                let _ = self.datapath.maps.remove_endpoint(u32::MAX, &[ip]);
                *summary.entry("orphan_entries_removed").or_default() += 1;
            }
        }
        summary
    }
}
