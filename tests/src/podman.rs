//! Podman (Debian 12's 4.3, CNI backend) as a real runtime in front of the plugin, entirely
//! private to one test:
//!
//! - its own `containers.conf` (`CONTAINERS_CONF`: no system or user file is read) and
//!   `storage.conf` (`CONTAINERS_STORAGE_CONF`, vfs driver, graph root and run root in the temp
//!   dir), its libpod tmp dir, file locks (not the machine-wide `/dev/shm` lock segment), event
//!   log, CNI config dir and CNI bin dir, all under one temp dir;
//! - a CNI network whose conflist is `deploy/cni/05-sluice.conflist` with a unique name and
//!   `daemonSocket` pointing at the test's sluiced;
//! - no image: `podman run --rootfs` on a temp rootfs made of Debian's static busybox;
//! - every podman process (and so conmon, the OCI runtime, the `container cleanup` exit
//!   commands and the plugin they exec) runs in the test's node network namespace, which has
//!   no uplink; containers get their own namespaces, wired only by sluice;
//! - containers live under a cgroup parent named with the tests' prefix, so that every process
//!   podman started can be found (and killed) and its cgroups removed.
//!
//! What podman still touches outside the temp dir, because 4.3 cannot be told otherwise: the
//! container network namespaces it creates as `/run/netns/netns-<uuid>` (removed when the
//! container stops), libcni's result cache `/var/lib/cni/results/<network>-<id>-<ifname>`
//! (removed by DEL; our network name is unique, and any leftover of ours is removed on drop),
//! and the cgroups under our cgroup parent (removed on drop). A test process killed outright
//! (SIGKILL) leaves its containers running: the next test's start kills the processes in
//! cgroups of dead test processes and removes those cgroups, but the containers' netns mounts
//! (`/run/netns/netns-<uuid>`, podman's naming, not ours) stay until removed by hand.
//!
//! The plugin is reached through a logging shim (a `/bin/sh` script named `sluice` in the CNI
//! bin dir) that records every call podman makes (verb, `CNI_*` variables, stdin, exit status,
//! stdout) and hands stdin, environment, stdout and exit status through unchanged: the tests
//! assert on what podman really sends.
//!
//! Why runc and not Debian's default crun: crun 1.8 refuses cgroup v1/hybrid hosts ("cgroups in
//! hybrid mode not supported"), even with `--cgroups=disabled`; runc works on v1, hybrid and v2.
//! Why explicit ulimits: podman 4.3 gives root containers `nofile=1048576` and a process limit
//! from pid_max, which the runtime cannot set without `CAP_SYS_RESOURCE` where the hard limits
//! are lower (as in this sandbox); the test's own hard limits (the process limit capped at
//! pid_max/threads-max, as podman caps its own) are always allowed.

use std::{
    io::Write,
    net::IpAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{daemon::Sluiced, ns::TestNs};

/// Busybox applets linked in the container rootfs.
const APPLETS: &[&str] = &[
    "sh", "ping", "nc", "sleep", "ip", "hostname", "httpd", "cat", "echo", "printf", "ls", "mkdir", "true",
    "ps",
];

/// Longest a single podman command may take before the test gives up on it.
const PODMAN_TIMEOUT: Duration = Duration::from_secs(120);

/// Each container serves its own name over HTTP on this port (busybox httpd).
pub const HTTP_PORT: u16 = 8080;

/// The containers' main process: write the container's name (its hostname) as the web page,
/// start busybox httpd on `HTTP_PORT` (it daemonizes), then wait; exits at once on SIGTERM so
/// `podman stop` does not wait for its timeout.
fn main_script() -> String {
    format!(
        "hostname > /www/index.html; httpd -p {HTTP_PORT} -h /www; trap 'exit 0' TERM; sleep 100000000 & wait"
    )
}

/// A private podman set up against one sluiced. Cleans up on drop (also on panic); `close`
/// does the same and fails when something could not be removed.
pub struct Podman {
    dir: Option<tempfile::TempDir>,
    /// The CNI network's name (unique to this test).
    pub network: String,
    node: PathBuf,
    /// Cgroup parent of every container (and conmon): `/<unique>`.
    cgroup_parent: String,
    rootfs: PathBuf,
    calls: PathBuf,
    /// The plugin's own log (`logFile` in the netconf).
    pub plugin_log: PathBuf,
    containers_conf: PathBuf,
    storage_conf: PathBuf,
}

/// One finished podman command.
#[derive(Debug)]
pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// One plugin invocation as podman made it (recorded by the shim).
#[derive(Clone, Debug)]
pub struct CniCall {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
    pub stdin: Value,
    pub status: i32,
    pub stdout: String,
}

impl CniCall {
    /// Value of a `CNI_ARGS` key.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .split(';')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    pub fn has_prev_result(&self) -> bool {
        self.stdin.get("prevResult").is_some_and(|p| !p.is_null())
    }

    /// One line for the report.
    pub fn summary(&self) -> String {
        let id: String = self.container_id.chars().take(12).collect();
        let mut keys: Vec<&str> = self
            .stdin
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        keys.sort();
        format!(
            "{} id={id} netns={} ifname={} args={:?} stdin keys={keys:?} -> {}",
            self.command,
            if self.netns.is_empty() { "-" } else { &self.netns },
            self.ifname,
            self.args,
            self.status
        )
    }
}

/// What `podman inspect` says of a container's attachment to our network.
#[derive(Clone, Debug)]
pub struct ContainerInfo {
    pub id: String,
    pub running: bool,
    pub ip: Option<IpAddr>,
    pub mac: String,
    pub gateway: String,
    /// `NetworkSettings.SandboxKey`: the container's netns path (empty when stopped).
    pub sandbox: String,
    /// Names of the networks the container is attached to.
    pub networks: Vec<String>,
}

/// Fail loudly (with the way to fix it) when podman cannot run here at all.
fn preflight() {
    let version = Command::new("podman").arg("--version").output();
    let version = match version {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        other => panic!(
            "podman is not usable here ({other:?}): `cargo xtask setup` installs the test packages \
             (podman, runc, busybox-static)"
        ),
    };
    assert!(
        Command::new("runc")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            || Path::new("/usr/sbin/runc").exists(),
        "runc is missing (Debian package runc): crun 1.8 cannot run containers on cgroup v1/hybrid hosts"
    );
    let busybox = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "busybox-static"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false);
    assert!(
        busybox && Path::new("/bin/busybox").exists(),
        "busybox-static is not installed: the container rootfs needs a static /bin/busybox"
    );
    eprintln!("podman: {version}");
}

fn hard_limit(resource: libc::__rlimit_resource_t) -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid pointer to a local.
    let rc = unsafe { libc::getrlimit(resource, &mut r) };
    (rc == 0 && r.rlim_max != libc::RLIM_INFINITY).then_some(r.rlim_max)
}

/// Run `cmd`, killing it after `timeout`. Never panics (it also runs in `Drop`).
fn output_with_timeout(mut cmd: Command, timeout: Duration, what: &str) -> Result<Output, String> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {what}: {e}"))?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(timeout) {
        Ok(r) => r,
        Err(_) => {
            // SAFETY: signalling our own child (not yet reaped: its waiter is still blocked).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let _ = rx.recv_timeout(Duration::from_secs(5));
            return Err(format!("{what} did not finish within {timeout:?}: killed"));
        }
    }
    .map_err(|e| format!("wait {what}: {e}"))?;
    Ok(Output {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// The cgroup hierarchy roots: `/sys/fs/cgroup` (v2) and its subdirectories (v1 controllers,
/// hybrid `unified`, `systemd`).
fn cgroup_roots() -> Vec<PathBuf> {
    let base = PathBuf::from("/sys/fs/cgroup");
    let mut roots = vec![base.clone()];
    roots.extend(
        std::fs::read_dir(&base)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path()),
    );
    roots
}

/// Every directory of the cgroup trees named `name` at the top of a hierarchy, deepest first.
fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), out);
            }
        }
        out.push(dir.to_path_buf());
    }
    let mut out = Vec::new();
    for root in cgroup_roots() {
        let top = root.join(name);
        if top.is_dir() {
            walk(&top, &mut out);
        }
    }
    out
}

/// Pids in the cgroup trees named `name`.
fn cgroup_pids(name: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = cgroup_dirs(name)
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|s| {
            s.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Kill every process in the cgroup trees named `name` (all of them were started by one test's
/// podman), then remove the cgroups. Returns what could not be removed.
fn remove_cgroup_tree(name: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = cgroup_pids(name);
        if pids.is_empty() || Instant::now() > deadline {
            break;
        }
        for pid in pids {
            // SAFETY: a process podman started for this test (it is in this test's cgroup).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut problems = Vec::new();
    for d in cgroup_dirs(name) {
        if let Err(e) = std::fs::remove_dir(&d) {
            problems.push(format!("cgroup {}: {e}", d.display()));
        }
    }
    problems
}

/// Remove the cgroups (and kill the processes) of test processes that died before their
/// destructors ran: top-level cgroups named `slt<pid>x...` whose pid is gone.
fn sweep_dead_cgroups() {
    let mut names: Vec<String> = Vec::new();
    for root in cgroup_roots() {
        for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("slt")
                .and_then(|r| r.split('x').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                names.push(name);
            }
        }
    }
    names.sort();
    names.dedup();
    for n in names {
        remove_cgroup_tree(&n);
    }
}

/// Mount points at or under `dir` (deepest first), from our mount table.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    let mut v: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| m == &prefix || m.starts_with(&format!("{prefix}/")))
        .collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.len()));
    v
}

/// The inode of a network namespace file (`/run/netns/x`, `/proc/<pid>/ns/net`).
pub fn netns_inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

impl Podman {
    /// Set up a private podman whose only network is sluice (talking to `daemon`), run from
    /// `node`'s network namespace.
    pub fn new(node: &TestNs, daemon: &Sluiced) -> Self {
        preflight();
        sweep_dead_cgroups();
        let dir = tempfile::Builder::new()
            .prefix(&crate::unique("podman"))
            .tempdir()
            .expect("tempdir");
        let d = dir.path().to_path_buf();
        for sub in [
            "etc",
            "cni-bin",
            "cni-conf",
            "graph",
            "run",
            "libpod-tmp",
            "home",
            "tmp",
            "rootfs",
        ] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        let network = crate::unique("net");
        let cgroup_parent = format!("/{}", crate::unique("cg"));
        let calls = d.join("cni-calls.log");
        let plugin_log = d.join("plugin.log");

        // The rootfs: a static busybox and its applets.
        let rootfs = d.join("rootfs");
        for sub in ["bin", "etc", "tmp", "www", "proc", "sys", "dev"] {
            std::fs::create_dir_all(rootfs.join(sub)).expect("mkdir rootfs");
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy busybox");
        for a in APPLETS {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a)).expect("applet link");
        }
        std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").expect("passwd");
        std::fs::write(rootfs.join("etc/group"), "root:x:0:\n").expect("group");

        // The plugin behind a logging shim. The real binary is run by absolute path.
        let real = std::fs::canonicalize(crate::bin("sluice")).expect("plugin path");
        let shim = d.join("cni-bin/sluice");
        let script = format!(
            "#!/bin/sh\n\
             # Records each call podman makes, then runs the real plugin with the same\n\
             # environment, stdin, stdout and exit status.\n\
             in=$(cat)\n\
             out=$(printf '%s' \"$in\" | '{real}'); st=$?\n\
             printf '%s\\t%s\\t%s\\t%s\\t%s\\t%s\\t%s\\t%s\\n' \"$CNI_COMMAND\" \"$CNI_CONTAINERID\" \
             \"$CNI_NETNS\" \"$CNI_IFNAME\" \"$CNI_ARGS\" \"$in\" \"$st\" \"$out\" >> '{calls}'\n\
             printf '%s' \"$out\"\n\
             exit $st\n",
            real = real.display(),
            calls = calls.display(),
        );
        std::fs::write(&shim, script).expect("write shim");
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).expect("chmod shim");

        // The shipped conflist, adapted: unique name, our daemon, a log file.
        let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/cni/05-sluice.conflist");
        let mut conflist: Value =
            serde_json::from_str(&std::fs::read_to_string(&shipped).expect("read shipped conflist"))
                .expect("shipped conflist is JSON");
        assert_eq!(
            conflist["cniVersion"], "1.0.0",
            "podman 4.3 cannot use the shipped conflist's version"
        );
        conflist["name"] = network.clone().into();
        let plugin = &mut conflist["plugins"][0];
        assert_eq!(plugin["type"], "sluice");
        plugin["daemonSocket"] = daemon.socket.display().to_string().into();
        plugin["logFile"] = plugin_log.display().to_string().into();
        std::fs::write(
            d.join("cni-conf/50-sluice.conflist"),
            serde_json::to_string_pretty(&conflist).expect("json"),
        )
        .expect("write conflist");

        // Ulimits the runtime may set (see the module doc).
        let mut ulimits = Vec::new();
        if let Some(n) = hard_limit(libc::RLIMIT_NOFILE) {
            ulimits.push(format!("\"nofile={n}:{n}\""));
        }
        if let Some(n) = hard_limit(libc::RLIMIT_NPROC) {
            // Podman lowers its own (and so conmon's and the runtime's) process limit to the
            // kernel's pid_max/threads-max: the container cannot get more than that.
            let n = ["/proc/sys/kernel/pid_max", "/proc/sys/kernel/threads-max"]
                .iter()
                .filter_map(|f| std::fs::read_to_string(f).ok()?.trim().parse::<u64>().ok())
                .fold(n, u64::min);
            ulimits.push(format!("\"nproc={n}:{n}\""));
        }
        let containers_conf = d.join("etc/containers.conf");
        std::fs::write(
            &containers_conf,
            format!(
                "[containers]\n\
                 default_ulimits = [{ulimits}]\n\
                 log_driver = \"k8s-file\"\n\
                 \n\
                 [network]\n\
                 network_backend = \"cni\"\n\
                 cni_plugin_dirs = [\"{bin}\"]\n\
                 network_config_dir = \"{conf}\"\n\
                 default_network = \"{network}\"\n\
                 \n\
                 [engine]\n\
                 runtime = \"runc\"\n\
                 cgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\n\
                 lock_type = \"file\"\n\
                 tmp_dir = \"{tmp}\"\n",
                ulimits = ulimits.join(", "),
                bin = d.join("cni-bin").display(),
                conf = d.join("cni-conf").display(),
                tmp = d.join("libpod-tmp").display(),
            ),
        )
        .expect("containers.conf");
        let storage_conf = d.join("etc/storage.conf");
        std::fs::write(
            &storage_conf,
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                d.join("graph").display(),
                d.join("run").display()
            ),
        )
        .expect("storage.conf");

        Self {
            dir: Some(dir),
            network,
            node: node.path(),
            cgroup_parent,
            rootfs,
            calls,
            plugin_log,
            containers_conf,
            storage_conf,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("not closed").path()
    }

    /// `podman ARGS` in the node namespace with only our configuration in the environment.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_in(self.dir(), args)
    }

    fn command_in(&self, d: &Path, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.node.display()))
            .arg("podman")
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", d.join("home"))
            .env("TMPDIR", d.join("tmp"))
            .env("CONTAINERS_CONF", &self.containers_conf)
            .env("CONTAINERS_STORAGE_CONF", &self.storage_conf);
        c
    }

    /// Run podman, whatever the outcome (panics only when it cannot run or hangs).
    pub fn try_run(&self, args: &[&str]) -> Output {
        output_with_timeout(
            self.command(args),
            PODMAN_TIMEOUT,
            &format!("podman {}", args.join(" ")),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Run podman; panic with its stderr and the plugin's calls when it fails. Returns stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.try_run(args);
        assert!(
            out.success,
            "podman {} failed:\n{}\nplugin calls:\n{}",
            args.join(" "),
            out.stderr,
            self.calls_summary()
        );
        out.stdout
    }

    /// `podman run -d` a busybox container on our network serving its name on `HTTP_PORT`;
    /// `extra` goes before `--rootfs`. Returns the full container id.
    pub fn run_container(&self, name: &str, extra: &[&str]) -> String {
        let out = self.try_run_container(name, extra);
        assert!(
            out.success,
            "podman run {name} failed:\n{}\nplugin calls:\n{}",
            out.stderr,
            self.calls_summary()
        );
        out.stdout.trim().to_owned()
    }

    pub fn try_run_container(&self, name: &str, extra: &[&str]) -> Output {
        let rootfs = self.rootfs.display().to_string();
        let mut args: Vec<&str> = vec![
            "run",
            "-d",
            "--name",
            name,
            "--hostname",
            name,
            "--network",
            &self.network,
            "--cgroup-parent",
            &self.cgroup_parent,
            // busybox ping uses a raw socket; podman 4.3 no longer grants NET_RAW by default.
            "--cap-add",
            "NET_RAW",
            "--tmpfs",
            "/www",
        ];
        args.extend_from_slice(extra);
        let script = main_script();
        args.extend_from_slice(&["--rootfs", &rootfs, "sh", "-c", &script]);
        self.try_run(&args)
    }

    /// `podman exec NAME ARGS`.
    pub fn exec(&self, name: &str, args: &[&str]) -> Output {
        let mut all = vec!["exec", name];
        all.extend_from_slice(args);
        self.try_run(&all)
    }

    pub fn inspect(&self, name: &str) -> Value {
        let out = self.run(&["inspect", "--type", "container", name]);
        let v: Value = serde_json::from_str(&out).expect("inspect is JSON");
        v[0].clone()
    }

    pub fn info(&self, name: &str) -> ContainerInfo {
        let v = self.inspect(name);
        let ns = &v["NetworkSettings"];
        let networks: Vec<String> = ns["Networks"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        let net = &ns["Networks"][&self.network];
        ContainerInfo {
            id: v["Id"].as_str().expect("Id").to_owned(),
            running: v["State"]["Running"].as_bool().unwrap_or(false),
            ip: net["IPAddress"].as_str().and_then(|s| s.parse().ok()),
            mac: net["MacAddress"].as_str().unwrap_or_default().to_owned(),
            gateway: net["Gateway"].as_str().unwrap_or_default().to_owned(),
            sandbox: ns["SandboxKey"].as_str().unwrap_or_default().to_owned(),
            networks,
        }
    }

    /// `ping` from container `from` to `dst` (a few tries: the first packets may wait for
    /// neighbour resolution).
    pub fn ping(&self, from: &str, dst: IpAddr) -> bool {
        (0..3).any(|_| {
            self.exec(
                from,
                &["ping", "-c", "3", "-i", "0.2", "-w", "3", &dst.to_string()],
            )
            .success
        })
    }

    /// An HTTP GET (TCP) from container `from` to `dst` with busybox nc (busybox wget cannot
    /// be used: the static build crashes in glibc's NSS): the page (the serving container's
    /// name), or what went wrong. Retries briefly: httpd may still be starting.
    pub fn http_get(&self, from: &str, dst: IpAddr) -> Result<String, String> {
        let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {dst} {HTTP_PORT}");
        let mut last = String::new();
        for _ in 0..10 {
            let out = self.exec(from, &["sh", "-c", &script]);
            if out.success && out.stdout.starts_with("HTTP/1.") && out.stdout.contains(" 200 ") {
                let body = out.stdout.split("\r\n\r\n").nth(1).unwrap_or_default();
                return Ok(body.trim().to_owned());
            }
            last = format!("{out:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(last)
    }

    /// The plugin calls recorded so far, in order.
    pub fn calls(&self) -> Vec<CniCall> {
        std::fs::read_to_string(&self.calls)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let f: Vec<&str> = l.splitn(8, '\t').collect();
                assert_eq!(f.len(), 8, "malformed call record: {l}");
                CniCall {
                    command: f[0].into(),
                    container_id: f[1].into(),
                    netns: f[2].into(),
                    ifname: f[3].into(),
                    args: f[4].into(),
                    stdin: serde_json::from_str(f[5]).unwrap_or(Value::String(f[5].into())),
                    status: f[6].parse().unwrap_or(-1),
                    stdout: f[7].into(),
                }
            })
            .collect()
    }

    /// The calls for one container (VERSION calls carry no container id).
    pub fn calls_for(&self, id: &str) -> Vec<CniCall> {
        self.calls()
            .into_iter()
            .filter(|c| c.container_id == id)
            .collect()
    }

    pub fn calls_summary(&self) -> String {
        self.calls()
            .iter()
            .map(|c| format!("  {}", c.summary()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Processes podman started for this test (conmon, containers, cleanup commands): the
    /// members of our cgroup parent, with their network namespace inode.
    pub fn processes(&self) -> Vec<(u32, String, Option<u64>)> {
        cgroup_pids(self.cgroup_parent.trim_start_matches('/'))
            .into_iter()
            .map(|pid| {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                (pid, comm, netns_inode(Path::new(&format!("/proc/{pid}/ns/net"))))
            })
            .collect()
    }

    /// libcni's cached results for our network (`/var/lib/cni/results/<network>-...`).
    pub fn cni_cache_files(&self) -> Vec<PathBuf> {
        let prefix = format!("{}-", self.network);
        std::fs::read_dir("/var/lib/cni/results")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect()
    }

    /// Remove everything; returns what could not be removed.
    fn cleanup(&mut self) -> Vec<String> {
        let Some(dir) = self.dir.take() else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        // Only our store: the configuration points podman at our temp dir.
        match output_with_timeout(
            self.command_in(dir.path(), &["rm", "--force", "--all", "--time", "0"]),
            PODMAN_TIMEOUT,
            "podman rm --all",
        ) {
            Ok(o) if o.success => {}
            Ok(o) => problems.push(format!("podman rm --all: {}", o.stderr.trim())),
            Err(e) => problems.push(e),
        }
        problems.extend(remove_cgroup_tree(self.cgroup_parent.trim_start_matches('/')));
        for m in mounts_under(dir.path()) {
            let c = std::ffi::CString::new(m.clone()).expect("path");
            // SAFETY: a valid C string; a mount under our own temp dir.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                problems.push(format!("umount {m}: {}", std::io::Error::last_os_error()));
            }
        }
        for f in self.cni_cache_files() {
            problems.push(format!("libcni cache left behind: {}", f.display()));
            let _ = std::fs::remove_file(f);
        }
        let path = dir.path().to_path_buf();
        if let Err(e) = dir.close() {
            problems.push(format!("remove {}: {e}", path.display()));
        }
        problems
    }

    /// Clean up now and fail when anything could not be removed.
    pub fn close(mut self) {
        let problems = self.cleanup();
        assert!(problems.is_empty(), "podman cleanup: {problems:#?}");
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let problems = self.cleanup();
        if !problems.is_empty() {
            let _ = writeln!(std::io::stderr(), "podman cleanup: {problems:#?}");
        }
    }
}
