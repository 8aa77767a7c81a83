//! Names, network namespaces and child processes of the bench, all of them removed again.
//!
//! Everything the bench creates is named `slb<pid>x<n><role>`: network namespaces, the
//! bpffs directories of its daemons, its temporary directories. A bench that dies before its
//! destructors run (SIGKILL) leaves them behind; the next bench removes those whose pid is no
//! longer alive ([`sweep_dead_leftovers`]) and never touches anything else. Long-lived children
//! (daemons, traffic servers) get `PR_SET_PDEATHSIG`, so they cannot outlive the bench.

use std::{
    fs::File,
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

const PREFIX: &str = "slb";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `slb<pid>x<n><role>`.
pub fn unique(role: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{}x{n}{role}", std::process::id())
}

/// A short name for interfaces (15 characters at most): `slb<pid><role>`.
pub fn ifname(role: &str) -> String {
    let s = format!("{PREFIX}{}{role}", std::process::id());
    s.chars().take(15).collect()
}

/// The pid of the bench that created `name`, if it is one of ours.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, _) = rest.split_once('x')?;
    pid.parse().ok()
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Remove namespaces, bpffs directories and temporary directories left by benches that no
/// longer run. Only names of our own pattern whose owner is dead are touched.
pub fn sweep_dead_leftovers() {
    let tmp = std::env::temp_dir();
    for dir in [Path::new("/run/netns"), Path::new("/sys/fs/bpf"), tmp.as_path()] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = owner_pid(&name) else { continue };
            if pid == std::process::id() || pid_alive(pid) {
                continue;
            }
            eprintln!("bench: removing {} left by bench {pid}", e.path().display());
            if dir == Path::new("/run/netns") {
                ip_quiet(&["netns", "del", &name]);
            } else {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Set by SIGINT/SIGTERM: loops stop at the next check, destructors clean up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turn Ctrl-C into an orderly stop (a plain exit would skip every destructor).
pub fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// Fail when the user asked the bench to stop.
pub fn check_interrupted() -> Result<()> {
    ensure!(!INTERRUPTED.load(Ordering::SeqCst), "interrupted");
    Ok(())
}

fn ip_quiet(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Run `ip` with `args`; fail with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("spawning ip (iproute2)")?;
    ensure!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// A named network namespace (`/run/netns/<name>`) with `lo` up, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(role: &str) -> Result<Self> {
        let name = unique(role);
        ip(&["netns", "add", &name])?;
        let ns = Self { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// A command run inside this namespace through nsenter (network only; mounts stay ours).
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        in_ns(&self.path(), program)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        ip_quiet(&["netns", "del", &self.name]);
    }
}

/// Set a sysctl of the namespace at `path` (per-namespace knobs only, e.g. net.ipv4.*).
pub fn sysctl(path: &Path, key: &str, value: &str) -> Result<()> {
    let out = in_ns(path, "sysctl")
        .args(["-q", "-w", &format!("{key}={value}")])
        .output()
        .context("spawning sysctl")?;
    ensure!(
        out.status.success(),
        "sysctl {key}={value} in {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// `nsenter --net=<path> program`.
pub fn in_ns(path: &Path, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", path.display())).arg(program);
    c
}

/// Move the calling thread into the network namespace at `path` (only this thread).
pub fn enter(path: &Path) -> Result<()> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: a valid fd; setns affects only the calling thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    ensure!(
        rc == 0,
        "setns({}): {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// Run `f` on a fresh thread inside the namespace at `path` and wait for it.
pub fn run_in<T: Send + 'static>(path: &Path, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    spawn_in(path, f)
        .join()
        .map_err(|_| anyhow::anyhow!("a thread inside {} panicked", path.display()))?
}

/// Run `f` on a fresh thread inside the namespace at `path`.
pub fn spawn_in<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> std::thread::JoinHandle<Result<T>> {
    let path = path.to_owned();
    std::thread::spawn(move || {
        enter(&path)?;
        f()
    })
}

/// A child process that is ours: killed (SIGTERM, then SIGKILL) and reaped on drop, and
/// killed by the kernel if the bench dies first.
pub struct OwnedChild {
    pub what: String,
    pub child: Option<Child>,
}

impl OwnedChild {
    /// Spawn `cmd` (from the main thread: the death signal follows the spawning thread).
    pub fn spawn(what: &str, cmd: &mut Command) -> Result<Self> {
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("spawning {what}"))?;
        Ok(Self {
            what: what.to_owned(),
            child: Some(child),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Fail when the process has exited already.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(c) = self.child.as_mut()
            && let Some(st) = c.try_wait()?
        {
            bail!("{} exited ({st})", self.what);
        }
        Ok(())
    }

    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else { return };
        // SAFETY: signalling our own child, not yet reaped (its pid cannot be reused).
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for OwnedChild {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A temporary directory `slb<pid>x<n><role>` under the system's, removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(role: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(unique(role));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Wait until `ok` holds, polling every few milliseconds.
pub fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    loop {
        if ok()? {
            return Ok(());
        }
        check_interrupted()?;
        ensure!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
