//! Durable state: one record per attachment (its leased addresses and, once registered, its
//! endpoint), in an embedded transactional store (redb: copy-on-write B-trees, every commit
//! fsynced). A crash at any point leaves the last committed state; leases and endpoints are
//! rebuilt from it at start.

use std::{net::IpAddr, path::Path};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use sluice_api::{Attachment, PodRef};

const ATTACHMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("attachments");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("state store: {0}")]
    Db(#[from] Box<redb::Error>),
    #[error("state store record {key}: {source}")]
    Decode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

fn db_err<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Db(Box::new(e.into()))
}

/// What the daemon knows of one attachment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRecord {
    pub attachment: Attachment,
    #[serde(default)]
    pub pod: Option<PodRef>,
    pub ips: Vec<IpAddr>,
    /// Seconds since the Unix epoch.
    pub allocated_at: u64,
    #[serde(default)]
    pub endpoint: Option<EndpointRecord>,
}

/// The datapath side of a registered attachment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub ep_id: u32,
    pub host_ifname: String,
    pub host_ifindex: u32,
    pub host_mac: String,
    pub pod_mac: String,
    #[serde(default)]
    pub netns: String,
    pub registered_at: u64,
}

fn key(a: &Attachment) -> String {
    format!("{}/{}", a.container_id, a.ifname)
}

pub struct Store {
    db: Database,
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            source: Box::new(e.into()),
        })?;
        // Make sure the table exists so that readers never fail on a fresh store.
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(ATTACHMENTS).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        Ok(Self { db })
    }

    /// Every record, in key order.
    pub fn load_all(&self) -> Result<Vec<AttachmentRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(ATTACHMENTS).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let rec = serde_json::from_slice(v.value()).map_err(|source| StoreError::Decode {
                key: k.value().to_owned(),
                source,
            })?;
            out.push(rec);
        }
        Ok(out)
    }

    /// Insert or replace a record (durable when this returns).
    pub fn put(&self, rec: &AttachmentRecord) -> Result<(), StoreError> {
        let data = serde_json::to_vec(rec).expect("serialize record");
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = txn.open_table(ATTACHMENTS).map_err(db_err)?;
            t.insert(key(&rec.attachment).as_str(), data.as_slice())
                .map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    /// Remove a record (durable when this returns). Absent is fine.
    pub fn remove(&self, a: &Attachment) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = txn.open_table(ATTACHMENTS).map_err(db_err)?;
            t.remove(key(a).as_str()).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, ip: &str) -> AttachmentRecord {
        AttachmentRecord {
            attachment: Attachment {
                container_id: id.into(),
                ifname: "eth0".into(),
            },
            pod: None,
            ips: vec![ip.parse().unwrap()],
            allocated_at: 1,
            endpoint: None,
        }
    }

    #[test]
    fn records_survive_reopen_and_removal_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let s = Store::open(&path).unwrap();
            s.put(&rec("a", "10.0.0.2")).unwrap();
            s.put(&rec("b", "10.0.0.3")).unwrap();
            s.remove(&rec("a", "10.0.0.2").attachment).unwrap();
        }
        let s = Store::open(&path).unwrap();
        let all = s.load_all().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].attachment.container_id, "b");
        // Removing what is absent is not an error.
        s.remove(&rec("zzz", "10.0.0.9").attachment).unwrap();
    }
}
