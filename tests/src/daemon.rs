//! `sluiced` under test: started in a node namespace as a DaemonSet would start it, with its
//! own socket, state dir and bpffs dir; stopped (and its pins removed) on drop.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use sluice_api::{Client, Request};

use crate::ns::TestNs;

pub struct Sluiced {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub bpffs: PathBuf,
    pub log: PathBuf,
    netns: String,
    args: Vec<String>,
    /// Keep the pins (and so the datapath) when dropped: for tests that restart the daemon.
    pub keep_pins: bool,
}

impl Sluiced {
    /// Start with `--pod-cidr 10.244.1.0/24` and `extra` flags; wait until the socket accepts.
    pub fn start(node: &TestNs, extra: &[&str]) -> Self {
        Self::start_inner(node, extra, true)
    }

    /// Start without `--pod-cidr` (the daemon takes it from its Node object).
    pub fn start_without_cidr(node: &TestNs, extra: &[&str]) -> Self {
        Self::start_inner(node, extra, false)
    }

    fn start_inner(node: &TestNs, extra: &[&str], default_cidr: bool) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&crate::prefix())
            .tempdir()
            .expect("tempdir");
        let socket = dir.path().join("run/sluiced.sock");
        let state_dir = dir.path().join("state");
        let bpffs = PathBuf::from(format!("/sys/fs/bpf/{}", crate::unique("bpf")));
        let mut args: Vec<String> = vec![
            "--socket".into(),
            socket.display().to_string(),
            "--state-dir".into(),
            state_dir.display().to_string(),
            "--bpffs".into(),
            bpffs.display().to_string(),
        ];
        if default_cidr && !extra.contains(&"--pod-cidr") {
            args.extend(["--pod-cidr".into(), "10.244.1.0/24".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut d = Self {
            child: None,
            log: dir.path().join("sluiced.log"),
            dir,
            socket,
            state_dir,
            bpffs,
            netns: node.path_str(),
            args,
            keep_pins: false,
        };
        d.launch();
        d
    }

    /// Replace the flags that are not paths (e.g. `--pod-cidr`) for the next `launch`.
    pub fn set_extra_args(&mut self, extra: &[&str]) {
        self.args.truncate(6);
        if !extra.contains(&"--pod-cidr") {
            self.args.extend(["--pod-cidr".into(), "10.244.1.0/24".into()]);
        }
        self.args.extend(extra.iter().map(|s| s.to_string()));
    }

    /// (Re)start the process with the same flags.
    pub fn launch(&mut self) {
        if let Err(e) = self.try_launch() {
            panic!("{e}");
        }
    }

    /// Like `launch`, for a start that may be refused: `Err` with the log when the daemon
    /// exits during start-up.
    pub fn try_launch(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.netns))
            .arg(crate::bin("sluiced"))
            .args(&self.args)
            .env("SLUICE_LOG", "info")
            .stdout(Stdio::from(log.try_clone().expect("dup")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn sluiced");
        self.child = Some(child);
        let r = self.wait_ready(Duration::from_secs(20));
        if r.is_err() {
            self.child = None;
        }
        r
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                return Err(format!(
                    "sluiced exited ({st}) during start-up:\n{}",
                    self.log_tail(40)
                ));
            }
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "sluiced not ready after {timeout:?}:\n{}",
            self.log_tail(40)
        ))
    }

    pub fn log_tail(&self, n: usize) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait (the datapath stays pinned).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.socket, Duration::from_secs(30)).expect("connect to sluiced")
    }

    pub fn call<T: serde::de::DeserializeOwned>(&self, req: &Request) -> T {
        self.client().call(req).unwrap_or_else(|e| panic!("{req:?}: {e}"))
    }

    pub fn leases(&self) -> Vec<sluice_api::LeaseInfo> {
        self.call(&Request::Leases)
    }

    pub fn endpoints(&self) -> Vec<sluice_api::EndpointInfo> {
        self.call(&Request::Endpoints)
    }

    /// Wait until every endpoint moved from its first (clsact) attachment to tcx links.
    pub fn wait_tcx(&self) {
        let start = Instant::now();
        loop {
            let s: sluice_api::Status = self.call(&Request::Status);
            if s.clsact_endpoints == 0 {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "endpoints stayed on clsact: {}",
                s.attach_mode
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pin_dir(&self) -> &Path {
        &self.bpffs
    }

    /// Link pins currently present (`<ifname>_ingress` / `_egress`).
    pub fn link_pins(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.bpffs.join("links"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// A network configuration pointing at this daemon.
    pub fn conf(&self, version: &str) -> serde_json::Value {
        serde_json::json!({
            "cniVersion": version,
            "name": "k8s-pod-network",
            "type": "sluice",
            "daemonSocket": self.socket.display().to_string(),
        })
    }
}

impl Drop for Sluiced {
    fn drop(&mut self) {
        self.stop();
        if !self.keep_pins {
            let _ = std::fs::remove_dir_all(&self.bpffs);
        }
    }
}
