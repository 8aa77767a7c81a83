//! Helpers shared by the property tests and the corpus runner: temporary directories, running
//! the plugin as a function, and reading its reply the way a runtime does.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
};

use serde_json::Value;

/// The codes the README documents: the spec's and sluice's own.
pub fn documented(code: u64) -> bool {
    matches!(code, 1..=7 | 11 | 50 | 51 | 100..=107)
}

/// A CNI_NETNS below `/dev/null`, which is not a directory: the path cannot exist, whatever
/// follows the prefix (even `..` components), so an ADD given it stops at opening the netns
/// and never touches the system.
pub const ABSENT_NETNS: &str = "/dev/null/absent-netns";

/// A fresh directory under the system temp dir, removed on drop. Its path is short, so a
/// `daemonSocket` in it fits a unix socket address.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("sluice-cni-{}-{n}", std::process::id()));
        std::fs::create_dir(&p).expect("create temp dir");
        Self(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Where a daemon would listen if there were one (there is not).
    pub fn socket(&self) -> String {
        self.0.join("sluiced.sock").display().to_string()
    }

    /// The queued-teardown file a DEL of (`cid`, `ifname`) leaves when sluiced is down.
    pub fn queued(&self, cid: &str, ifname: &str) -> PathBuf {
        self.0
            .join(sluice_api::PENDING_DIR_NAME)
            .join(format!("{}.json", sluice_api::host_ifname(cid, ifname)))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a runtime makes of one invocation.
#[derive(Debug)]
pub struct Answer {
    pub status: i32,
    /// The reply document, if stdout was not empty.
    pub reply: Option<Value>,
}

impl Answer {
    /// The error code (panics, with the reply, if this is not an error reply).
    pub fn code(&self) -> u64 {
        self.reply
            .as_ref()
            .and_then(|r| r.get("code"))
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("no integer code in {self:?}"))
    }

    /// `msg` and `details` together: a refusal names its offender in one or the other.
    pub fn text(&self) -> String {
        let r = self.reply.as_ref().expect("reply");
        let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
        format!("{} {}", s("msg"), s("details"))
    }

    /// Assert a refusal with `code` whose message mentions `needle`.
    pub fn refused(&self, code: u64, needle: &str) {
        assert_ne!(self.status, 0, "{self:?}");
        assert_eq!(self.code(), code, "{self:?}");
        assert!(
            self.text().contains(needle),
            "{self:?} does not mention {needle:?}"
        );
    }
}

/// Check `stdout` the way a runtime reads it: empty, or exactly one JSON object (an error
/// reply when the status is non-zero, with an integer code among the documented ones).
pub fn parse_stdout(stdout: &str, status: i32) -> Answer {
    if stdout.is_empty() {
        assert_eq!(status, 0, "a failure must print an error object");
        return Answer { status, reply: None };
    }
    // `from_str` refuses trailing non-whitespace: a second document or stray text fails here.
    let reply: Value = serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {stdout:?}"));
    assert!(reply.is_object(), "reply is not an object: {stdout}");
    if status != 0 {
        let code = reply.get("code").and_then(Value::as_u64);
        assert!(
            code.is_some_and(documented),
            "undocumented or missing code: {stdout}"
        );
        assert!(reply.get("msg").is_some_and(Value::is_string), "no msg: {stdout}");
        assert!(
            reply.get("cniVersion").is_some_and(Value::is_string),
            "no cniVersion: {stdout}"
        );
    }
    Answer {
        status,
        reply: Some(reply),
    }
}

/// Run the plugin as a function with exactly these variables set.
pub fn run(env: &BTreeMap<String, String>, stdin: &[u8]) -> Answer {
    let reply = sluice_cni::run(|k| env.get(k).cloned(), stdin);
    assert!(
        !reply.stdout.contains('\n'),
        "the library reply is one line: {:?}",
        reply.stdout
    );
    parse_stdout(&reply.stdout, reply.status)
}

/// An environment from pairs.
pub fn env_of(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
