//! `sluiced --manifests DIR`: Kubernetes objects from a directory of YAML/JSON files,
//! re-read when files are added, changed or removed (inotify, plus a periodic rescan as a
//! safety net). A file that fails to parse keeps its last good contents in force: a
//! half-written file must never drop a deny policy.

use std::{
    collections::BTreeMap,
    hash::{Hash, Hasher},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use sluice_policy::manifests::{self, Objects};

use crate::node::Node;

struct FileState {
    fingerprint: u64,
    objects: Objects,
}

pub struct ManifestDir {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
}

fn fingerprint(data: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data.hash(&mut h);
    h.finish()
}

fn is_manifest(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    ) && !p
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn list(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            list(&p, out);
        } else if is_manifest(&p) {
            out.push(p);
        }
    }
}

impl ManifestDir {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            files: BTreeMap::new(),
        }
    }

    /// Re-read the directory. Returns whether anything changed.
    pub fn rescan(&mut self) -> bool {
        let mut paths = Vec::new();
        list(&self.dir, &mut paths);
        let mut changed = false;
        let before = self.files.len();
        self.files.retain(|p, _| paths.contains(p));
        changed |= self.files.len() != before;
        for p in paths {
            let Ok(data) = std::fs::read(&p) else { continue };
            let fp = fingerprint(&data);
            if self.files.get(&p).is_some_and(|f| f.fingerprint == fp) {
                continue;
            }
            match manifests::parse(&String::from_utf8_lossy(&data)) {
                Ok(objects) => {
                    self.files.insert(
                        p,
                        FileState {
                            fingerprint: fp,
                            objects,
                        },
                    );
                    changed = true;
                }
                Err(e) => {
                    tracing::warn!(file = %p.display(), error = %e, "manifest does not parse: keeping its previous contents");
                    // Remember the fingerprint so the same broken content is not re-reported.
                    if let Some(f) = self.files.get_mut(&p) {
                        f.fingerprint = fp;
                    } else {
                        self.files.insert(
                            p,
                            FileState {
                                fingerprint: fp,
                                objects: Objects::default(),
                            },
                        );
                    }
                }
            }
        }
        changed
    }

    /// Every file's objects together (files in path order; later files win on equal names).
    pub fn merged(&self) -> Objects {
        let mut out = Objects::default();
        for f in self.files.values() {
            out.merge(&f.objects);
        }
        out
    }
}

/// Watch the directory and push every change into the node's policy. Returns never.
pub async fn watch(mut dir: ManifestDir, node: Arc<Node>) {
    use notify::Watcher;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(16);
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok() {
            let _ = tx.try_send(());
        }
    });
    let _watcher = match watcher {
        Ok(mut w) => match w.watch(&dir.dir, notify::RecursiveMode::Recursive) {
            Ok(()) => Some(w),
            Err(e) => {
                tracing::warn!(dir = %dir.dir.display(), error = %e, "cannot watch manifests: polling only");
                None
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "no inotify: polling manifests only");
            None
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            Some(()) = rx.recv() => {
                // Let a burst of events (an editor's write + rename) settle.
                tokio::time::sleep(Duration::from_millis(5)).await;
                while rx.try_recv().is_ok() {}
            }
            _ = tick.tick() => {}
        }
        if dir.rescan() {
            node.set_policy_objects(dir.merged()).await;
        }
    }
}
