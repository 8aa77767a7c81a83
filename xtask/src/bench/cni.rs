//! Executing CNI plugins as a runtime does: the binary itself (no shell, no nsenter in
//! between, so its start-up is all that is timed besides its work) in the node namespace,
//! `CNI_*` in an otherwise empty environment, the network configuration on stdin, the result
//! on stdout.

use std::{
    fs::File,
    io::Write,
    net::IpAddr,
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::netns::Netns;

/// Where Debian's containernetworking-plugins puts the reference plugins.
pub const REF_PLUGIN_DIR: &str = "/usr/lib/cni";

/// One network: a plugin binary, its configuration, the namespace it runs in.
#[derive(Clone)]
pub struct Plugin {
    /// `sluice`, `bridge`, `ptp`, `loopback`.
    pub label: &'static str,
    pub bin: PathBuf,
    pub conf: String,
    /// The node namespace (the runtime's).
    pub node: PathBuf,
}

impl Plugin {
    pub fn new(label: &'static str, bin: PathBuf, conf: &Value, node: &Netns) -> Self {
        Self {
            label,
            bin,
            conf: conf.to_string(),
            node: node.path(),
        }
    }

    /// A reference plugin of containernetworking-plugins.
    pub fn reference(label: &'static str, conf: &Value, node: &Netns) -> Self {
        Self::new(label, Path::new(REF_PLUGIN_DIR).join(label), conf, node)
    }

    /// Run `command` (ADD/DEL) for `container_id` in `netns`; returns stdout and the time from
    /// spawn to exit.
    pub fn exec(
        &self,
        command: &str,
        container_id: &str,
        netns: &Path,
        pod: &str,
    ) -> Result<(String, Duration)> {
        let node = File::open(&self.node).with_context(|| format!("opening {}", self.node.display()))?;
        let node_fd = node.as_raw_fd();
        let mut cmd = Command::new(&self.bin);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container_id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", REF_PLUGIN_DIR)
            .env(
                "CNI_ARGS",
                format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={pod}"),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: setns is async-signal-safe; `node` stays open until spawn has returned.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(node_fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning the {} CNI plugin ({})", self.label, self.bin.display()))?;
        drop(node);
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(self.conf.as_bytes())
                .with_context(|| format!("writing the configuration to the {} plugin", self.label))?;
        }
        let out = child.wait_with_output()?;
        let elapsed = start.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "CNI {command} by the {} plugin for {container_id} failed ({}): {}{}",
                self.label,
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok((stdout, elapsed))
    }
}

/// The first IPv4 address of a CNI result.
pub fn result_ip(result: &str) -> Result<IpAddr> {
    let v: Value = serde_json::from_str(result.trim())
        .with_context(|| format!("the plugin's result is not JSON: {result:?}"))?;
    let a = v["ips"][0]["address"]
        .as_str()
        .with_context(|| format!("no ips[0].address in the plugin's result: {result}"))?;
    a.split('/')
        .next()
        .unwrap_or(a)
        .parse()
        .with_context(|| format!("bad address {a:?} in the plugin's result"))
}

/// A pod: its namespace, wired by a plugin's ADD.
pub struct Pod {
    pub container_id: String,
    pub name: String,
    pub ip: Option<IpAddr>,
    pub add_time: Duration,
    // Last: deleted after everything that refers to it.
    pub ns: Netns,
}

impl Pod {
    /// A new namespace and an ADD into it (pod `name` of namespace `bench`).
    pub fn add(plugin: &Plugin, name: &str) -> Result<Self> {
        let ns = Netns::new("pod")?;
        Self::add_in(plugin, ns, name)
    }

    /// ADD into an existing namespace.
    pub fn add_in(plugin: &Plugin, ns: Netns, name: &str) -> Result<Self> {
        let container_id = format!("{}-ctr", ns.name);
        let (out, add_time) = plugin.exec("ADD", &container_id, &ns.path(), name)?;
        let ip = result_ip(&out).ok();
        Ok(Self {
            container_id,
            name: name.to_owned(),
            ip,
            add_time,
            ns,
        })
    }

    pub fn ip(&self) -> Result<IpAddr> {
        self.ip
            .with_context(|| format!("pod {} got no address", self.name))
    }

    pub fn del(&self, plugin: &Plugin) -> Result<Duration> {
        Ok(plugin
            .exec("DEL", &self.container_id, &self.ns.path(), &self.name)?
            .1)
    }
}
