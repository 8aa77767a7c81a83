//! Network namespaces for tests, deleted on drop.

use std::{path::PathBuf, process::Command};

/// A named network namespace (`/run/netns/<name>`) with `lo` up, deleted on drop.
pub struct TestNs {
    pub name: String,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip").args(args).status().is_ok_and(|s| s.success())
}

impl TestNs {
    pub fn new(role: &str) -> Self {
        let name = crate::unique(role);
        assert!(ip(&["netns", "add", &name]), "ip netns add {name}");
        let ns = Self { name };
        assert!(ip(&["-n", &ns.name, "link", "set", "lo", "up"]));
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    pub fn path_str(&self) -> String {
        self.path().display().to_string()
    }

    /// A command that runs inside this namespace (network only: mounts stay the host's).
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path_str())).arg(program);
        c
    }

    /// Run `f` on a fresh thread inside this namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = self.path();
        std::thread::spawn(move || {
            let ns = sluice_cni::netns::NetNs::open(&path).expect("open netns");
            ns.enter().expect("enter netns");
            f()
        })
    }

    /// Run `f` inside this namespace and wait for it.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().expect("thread in netns panicked")
    }

    /// Does an interface of this name exist here?
    pub fn has_link(&self, name: &str) -> bool {
        let name = name.to_owned();
        self.run(move || {
            sluice_cni::netlink::Netlink::open()
                .and_then(|mut nl| nl.link_by_name(&name))
                .expect("netlink")
                .is_some()
        })
    }

    /// Names of the interfaces here.
    pub fn links(&self) -> Vec<String> {
        let out = self
            .cmd("ip")
            .args(["-o", "link", "show"])
            .output()
            .expect("ip link");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .collect()
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        ip(&["netns", "del", &self.name]);
    }
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The pid encoded in one of our names (`slt<pid>x...`).
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix("slt")?.split('x').next()?.parse().ok()
}

/// Remove namespaces and bpffs pins left by test processes that no longer exist (killed
/// before their destructors ran). Only names with our prefix are touched.
pub fn sweep_dead_leftovers() {
    for dir in ["/run/netns", "/sys/fs/bpf"] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = owner_pid(&name) else { continue };
            if pid == std::process::id() || pid_alive(pid) {
                continue;
            }
            if dir == "/run/netns" {
                ip(&["netns", "del", &name]);
            } else {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}
