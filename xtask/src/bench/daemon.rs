//! `sluiced` as the bench runs it: in a node namespace of its own, with its own socket, state
//! directory and bpffs directory (`/sys/fs/bpf/slb<pid>x<n>bpf`), stopped and its pins removed
//! on drop.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{
    Bins,
    netns::{self, Netns, OwnedChild, TempDir},
};

pub struct Sluiced {
    proc: OwnedChild,
    pub socket: PathBuf,
    pub bpffs: PathBuf,
    pub log: PathBuf,
    /// `--manifests` directory, when the daemon follows one.
    pub manifests: Option<PathBuf>,
    sluicectl: PathBuf,
    // Last: removed after the process stopped.
    _dir: TempDir,
}

impl Sluiced {
    /// Start in `node` with `--pod-cidr cidr` (and `--manifests DIR` when `manifests`); waits
    /// until the socket accepts.
    pub fn start(bins: &Bins, node: &Netns, cidr: &str, manifests: bool) -> Result<Self> {
        Self::start_with(bins, node, cidr, manifests, &[])
    }

    /// `start` with more flags (`--node-name`, `--routing`...).
    pub fn start_with(
        bins: &Bins,
        node: &Netns,
        cidr: &str,
        manifests: bool,
        extra: &[&str],
    ) -> Result<Self> {
        let dir = TempDir::new("sluiced")?;
        let socket = dir.path.join("run/sluiced.sock");
        let bpffs = PathBuf::from(format!("/sys/fs/bpf/{}", netns::unique("bpf")));
        let log = dir.path.join("sluiced.log");
        let mdir = manifests.then(|| dir.path.join("manifests"));
        let mut cmd = node.cmd(bins.get("sluiced")?);
        cmd.args(["--pod-cidr", cidr, "--socket"])
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.path.join("state"))
            .arg("--bpffs")
            .arg(&bpffs)
            .args(extra);
        if let Some(m) = &mdir {
            std::fs::create_dir_all(m)?;
            cmd.arg("--manifests").arg(m);
        }
        let logf = std::fs::File::create(&log)?;
        cmd.stdout(Stdio::from(logf.try_clone()?))
            .stderr(Stdio::from(logf));
        let proc = OwnedChild::spawn("sluiced", &mut cmd)?;
        let mut d = Self {
            proc,
            socket,
            bpffs,
            log,
            manifests: mdir,
            sluicectl: bins.get("sluicectl")?,
            _dir: dir,
        };
        let sock = d.socket.clone();
        let res = netns::wait_for("sluiced's socket", Duration::from_secs(20), || {
            d.proc.check_running()?;
            Ok(std::os::unix::net::UnixStream::connect(&sock).is_ok())
        });
        if let Err(e) = res {
            bail!("sluiced did not start: {e}\n{}", d.log_tail(20));
        }
        Ok(d)
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn log_tail(&self, n: usize) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// `sluicectl --output json ARGS`, parsed. A busy daemon can refuse a connection for a
    /// moment (a full listen backlog: EAGAIN), so failures are retried briefly.
    pub fn ctl(&self, args: &[&str]) -> Result<Value> {
        let mut last = String::new();
        for attempt in 0..20 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(50));
            }
            let out = Command::new(&self.sluicectl)
                .arg("--socket")
                .arg(&self.socket)
                .args(["--output", "json"])
                .args(args)
                .output()
                .context("spawning sluicectl")?;
            if out.status.success() {
                return serde_json::from_slice(&out.stdout)
                    .with_context(|| format!("sluicectl {} printed no JSON", args.join(" ")));
            }
            last = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            self.proc_running()?;
        }
        bail!(
            "sluicectl {} failed: {last}
{}",
            args.join(" "),
            self.log_tail(20)
        )
    }

    fn proc_running(&self) -> Result<()> {
        let pid = self.pid();
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "));
        if !alive {
            bail!("sluiced (pid {pid}) is gone:\n{}", self.log_tail(20));
        }
        Ok(())
    }

    pub fn status(&self) -> Result<Value> {
        self.ctl(&["status"])
    }

    /// The daemon's resident and peak resident memory, in KiB (`/proc/PID/status`).
    pub fn memory_kib(&self) -> Result<(u64, u64)> {
        let pid = self.pid();
        let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status (is sluiced running?)"))?;
        let field = |name: &str| -> Result<u64> {
            s.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("no {name} in /proc/{pid}/status"))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// The network configuration a runtime would hand the plugin for this daemon.
    pub fn conf(&self, name: &str) -> Value {
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": name,
            "type": "sluice",
            "daemonSocket": self.socket.display().to_string(),
        })
    }

    /// Write a manifest file atomically (temp + rename, as tools do).
    pub fn write_manifest(&self, name: &str, text: &str) -> Result<()> {
        let dir = self
            .manifests
            .as_ref()
            .context("this sluiced was started without --manifests")?;
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, dir.join(name))?;
        Ok(())
    }

    /// Wait until the daemon applied a policy revision after `before` and `ok(status)` holds.
    pub fn wait_applied(&self, before: u64, timeout: Duration, ok: impl Fn(&Value) -> bool) -> Result<()> {
        let res = netns::wait_for("sluiced to apply the manifests", timeout, || {
            // Not too eager: every poll is a sluicectl process and a connection.
            std::thread::sleep(Duration::from_millis(20));
            let s = self.status()?;
            Ok(s["policy_revision"].as_u64().unwrap_or(0) > before && ok(&s))
        });
        if let Err(e) = res {
            bail!("{e}\n{}", self.log_tail(20));
        }
        Ok(())
    }

    pub fn revision(&self) -> Result<u64> {
        self.status()?["policy_revision"]
            .as_u64()
            .context("sluicectl status has no policy_revision")
    }
}

impl Drop for Sluiced {
    fn drop(&mut self) {
        self.proc.stop();
        let _ = std::fs::remove_dir_all(&self.bpffs);
    }
}
