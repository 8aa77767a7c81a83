//! One async lock per attachment: operations on the same attachment (allocate, register,
//! teardown...) run one at a time, operations on different attachments run concurrently.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use sluice_api::Attachment;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Default)]
pub struct AttachmentLocks {
    locks: Mutex<HashMap<Attachment, Arc<AsyncMutex<()>>>>,
}

pub struct AttachmentGuard<'a> {
    owner: &'a AttachmentLocks,
    key: Attachment,
    guard: Option<OwnedMutexGuard<()>>,
}

impl AttachmentLocks {
    pub async fn lock(&self, a: &Attachment) -> AttachmentGuard<'_> {
        let m = {
            let mut locks = self.locks.lock().expect("locks");
            locks.entry(a.clone()).or_default().clone()
        };
        let guard = m.lock_owned().await;
        AttachmentGuard {
            owner: self,
            key: a.clone(),
            guard: Some(guard),
        }
    }
}

impl Drop for AttachmentGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        // Forget the lock once nobody holds or waits for it, so the table stays small.
        let mut locks = self.owner.locks.lock().expect("locks");
        if let Some(m) = locks.get(&self.key)
            && Arc::strong_count(m) == 1
        {
            locks.remove(&self.key);
        }
    }
}
