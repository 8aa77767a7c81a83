//! The corpus of malformed (and a few well-formed) invocations in `tests/corpus/*.json`, each
//! run twice: through `sluice_cni::run`, and through the `sluice` binary with exactly the case's
//! environment, where stdout must carry the reply alone (one JSON document and a newline, or
//! nothing) and stderr nothing.
//!
//! A case:
//!
//! | key | meaning |
//! |---|---|
//! | `name` | what it checks |
//! | `base` | optional verb whose valid environment the case starts from (container `c0ffee`, `eth0`, `/opt/cni/bin`, and for ADD and CHECK an absent netns) |
//! | `env` | variables to set over the base; `null` unsets one |
//! | `stdin` | a string is written as is, any other JSON value serialized; `stdin_bytes` for non-UTF-8 |
//! | `files` | files to create in the case's temporary directory first |
//! | `needs` | `"netns"`: the case runs ADD in a fresh network namespace |
//! | `status`, `code`, `msg` | the exit status, the error code, a substring of msg or details |
//! | `stdout` | on success: `"empty"`, or a substring of the reply |
//! | `queued` | `[container id, ifname]` whose teardown DEL must have queued |
//! | `log` | a substring of `${TMP}/plugin.log` |
//!
//! Placeholders in env values and stdin: `${TMP}` (a fresh directory per run), `${SOCK}`
//! (`${TMP}/sluiced.sock`, where no daemon listens), `${NETNS}`, `${ABSENT}` (a netns path that
//! cannot exist).

mod common;

use std::{
    collections::BTreeMap,
    io::Write,
    os::unix::ffi::OsStrExt,
    process::{Command, Stdio},
    sync::mpsc,
};

use common::{ABSENT_NETNS, Answer, TempDir, parse_stdout};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    base: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, Option<String>>,
    #[serde(default)]
    stdin: Option<Value>,
    #[serde(default)]
    stdin_bytes: Option<Vec<u8>>,
    #[serde(default)]
    files: BTreeMap<String, String>,
    #[serde(default)]
    needs: Option<String>,
    status: i32,
    #[serde(default)]
    code: Option<u64>,
    #[serde(default)]
    msg: Option<String>,
    #[serde(default)]
    stdout: Option<String>,
    #[serde(default)]
    queued: Option<(String, String)>,
    #[serde(default)]
    log: Option<String>,
}

/// A network namespace of its own, held by a parked thread: ADD can open it, enter it and look
/// for its interface without any effect on the host; it goes away with the thread.
struct FreshNetns {
    path: String,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FreshNetns {
    fn new() -> Result<Self, String> {
        let (tx_path, rx_path) = mpsc::channel();
        let (stop, rx_stop) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // SAFETY: unshare and gettid take no pointers; CLONE_NEWNET moves only this thread,
            // which does nothing but wait.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                let _ = tx_path.send(Err(std::io::Error::last_os_error().to_string()));
                return;
            }
            let tid = unsafe { libc::gettid() };
            let _ = tx_path.send(Ok(format!("/proc/{}/task/{tid}/ns/net", std::process::id())));
            let _ = rx_stop.recv();
        });
        let path = rx_path.recv().map_err(|e| e.to_string())??;
        Ok(Self {
            path,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for FreshNetns {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn base_env(verb: &str) -> BTreeMap<String, String> {
    let mut e = BTreeMap::from([("CNI_COMMAND".to_owned(), verb.to_owned())]);
    if matches!(verb, "ADD" | "DEL" | "CHECK") {
        e.insert("CNI_CONTAINERID".into(), "c0ffee".into());
        e.insert("CNI_IFNAME".into(), "eth0".into());
        e.insert("CNI_PATH".into(), "/opt/cni/bin".into());
    }
    if matches!(verb, "ADD" | "CHECK") {
        e.insert("CNI_NETNS".into(), "${ABSENT}".into());
    }
    e
}

/// `s` with the placeholders of one run filled in.
fn subst(s: &str, tmp: &TempDir, netns: Option<&str>) -> String {
    s.replace("${SOCK}", &tmp.socket())
        .replace("${TMP}", &tmp.path().display().to_string())
        .replace("${ABSENT}", ABSENT_NETNS)
        .replace("${NETNS}", netns.unwrap_or("${NETNS}"))
}

/// The environment and stdin of `case` for one run.
fn inputs(case: &Case, tmp: &TempDir, netns: Option<&str>) -> (BTreeMap<String, String>, Vec<u8>) {
    let subst = |s: &str| subst(s, tmp, netns);
    let mut env = case.base.as_deref().map(base_env).unwrap_or_default();
    for (k, v) in &case.env {
        match v {
            Some(v) => env.insert(k.clone(), v.clone()),
            None => env.remove(k),
        };
    }
    let env = env.into_iter().map(|(k, v)| (k, subst(&v))).collect();
    let stdin = match (&case.stdin, &case.stdin_bytes) {
        (_, Some(b)) => b.clone(),
        (Some(Value::String(s)), None) => subst(s).into_bytes(),
        (Some(v), None) => subst(&v.to_string()).into_bytes(),
        (None, None) => Vec::new(),
    };
    (env, stdin)
}

/// Run the binary with exactly `env`; check the stdout/stderr discipline and read the reply.
fn run_binary(env: &BTreeMap<String, String>, stdin: &[u8]) -> Answer {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .env_clear()
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    // The plugin reads all of stdin before answering; a write error (it exited early) is fine.
    let _ = child.stdin.take().expect("stdin").write_all(stdin);
    let out = child.wait_with_output().expect("wait for sluice");
    let status = out.status.code().expect("exited, not killed by a signal");
    let stdout = String::from_utf8(out.stdout).expect("stdout is UTF-8");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "stderr: {stderr}");
    if stdout.is_empty() {
        return parse_stdout("", status);
    }
    let body = stdout
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("reply does not end in a newline: {stdout:?}"));
    assert!(!body.contains('\n'), "more than the reply on stdout: {stdout:?}");
    parse_stdout(body, status)
}

fn check(case: &Case, a: &Answer, tmp: &TempDir, netns: Option<&str>) {
    assert_eq!(a.status, case.status, "status: {a:?}");
    if let Some(code) = case.code {
        a.refused(code, &subst(case.msg.as_deref().unwrap_or_default(), tmp, netns));
    } else {
        assert_eq!(a.status, 0, "a case without a code expects success");
        match case.stdout.as_deref() {
            Some("empty") => assert!(a.reply.is_none(), "stdout not empty: {a:?}"),
            Some(sub) => {
                let r = a.reply.as_ref().expect("a reply").to_string();
                assert!(r.contains(sub), "{r} lacks {sub}");
            }
            None => {}
        }
    }
    if let Some((cid, ifname)) = &case.queued {
        let q = tmp.queued(cid, ifname);
        let body = std::fs::read_to_string(&q).unwrap_or_else(|e| panic!("{}: {e}", q.display()));
        assert!(
            body.contains(cid.as_str()) && body.contains(ifname.as_str()),
            "{body}"
        );
    }
    if let Some(sub) = &case.log {
        let log = std::fs::read_to_string(tmp.path().join("plugin.log")).expect("log file");
        assert!(log.contains(sub.as_str()), "log {log:?} lacks {sub}");
    }
}

fn load() -> Vec<(String, Case)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/corpus")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read corpus file");
        let list: Vec<Case> = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let file = f.file_name().expect("name").to_string_lossy().into_owned();
        cases.extend(list.into_iter().map(|c| (file.clone(), c)));
    }
    cases
}

#[test]
fn corpus() {
    let cases = load();
    assert!(cases.len() >= 40, "the corpus has {} cases", cases.len());
    let netns = if cases.iter().any(|(_, c)| c.needs.as_deref() == Some("netns")) {
        FreshNetns::new()
    } else {
        Err("not needed".into())
    };
    let mut skipped = Vec::new();
    let mut failed = Vec::new();
    for (file, case) in &cases {
        let ns = match (case.needs.as_deref(), &netns) {
            (None, _) => None,
            (Some("netns"), Ok(ns)) => Some(ns.path.as_str()),
            (Some("netns"), Err(e)) => {
                skipped.push(format!("{file}: {}: no network namespace ({e})", case.name));
                continue;
            }
            (Some(other), _) => panic!("{}: unknown need {other}", case.name),
        };
        for how in ["run", "binary"] {
            let tmp = TempDir::new();
            for (rel, body) in &case.files {
                std::fs::write(tmp.path().join(rel), body).expect("write case file");
            }
            let (env, stdin) = inputs(case, &tmp, ns);
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let a = match how {
                    "run" => common::run(&env, &stdin),
                    _ => run_binary(&env, &stdin),
                };
                check(case, &a, &tmp, ns);
            }));
            if let Err(p) = outcome {
                let why = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failed.push(format!("{file}: {} ({how}): {why}", case.name));
            }
        }
    }
    // A skip is reported, never silent: without CAP_SYS_ADMIN there is no fresh netns.
    for s in &skipped {
        eprintln!("SKIPPED {s}");
    }
    assert!(
        failed.is_empty(),
        "{} failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    eprintln!(
        "corpus: {} cases, each through run and the binary; {} skipped",
        cases.len(),
        skipped.len()
    );
}

/// A variable that is set but not UTF-8 is refused as such (4, naming it), not taken for unset
/// ("required env variables [CNI_IFNAME] missing" for a variable the runtime did set).
#[test]
fn non_utf8_environment() {
    let tmp = TempDir::new();
    for var in [
        "CNI_COMMAND",
        "CNI_CONTAINERID",
        "CNI_IFNAME",
        "CNI_NETNS",
        "CNI_ARGS",
        "CNI_PATH",
    ] {
        let mut env = base_env("DEL");
        env.insert("CNI_NETNS".into(), ABSENT_NETNS.into());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.env_clear().envs(&env);
        cmd.env(var, std::ffi::OsStr::from_bytes(b"eth\xff0"));
        let conf = format!(
            r#"{{"cniVersion":"1.0.0","name":"n","type":"sluice","daemonSocket":"{}"}}"#,
            tmp.socket()
        );
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sluice");
        let _ = child.stdin.take().expect("stdin").write_all(conf.as_bytes());
        let out = child.wait_with_output().expect("wait");
        let stdout = String::from_utf8(out.stdout).expect("UTF-8 stdout");
        let a = parse_stdout(
            stdout.trim_end_matches('\n'),
            out.status.code().expect("exit code"),
        );
        a.refused(4, &format!("{var} is not valid UTF-8"));
        assert!(out.stderr.is_empty());
    }
}
