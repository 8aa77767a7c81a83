//! The bpffs directory where sluice pins its maps, programs and links, mounting bpffs when the
//! node has none (a daemon started with `nsenter --net=...` shares the host's mounts, which
//! may lack it).

use std::{
    ffi::CString,
    io,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Debug, thiserror::Error)]
pub enum BpffsError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BpffsError + 'a {
    move |source| BpffsError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Is `path` (which must exist) on a bpf filesystem?
pub fn is_bpffs(path: &Path) -> Result<bool, BpffsError> {
    let c = CString::new(path.as_os_str().as_bytes()).expect("path without NUL");
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io_err("statfs", path)(io::Error::last_os_error()));
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

fn mount_bpffs(at: &Path) -> Result<(), BpffsError> {
    std::fs::create_dir_all(at).map_err(io_err("create", at))?;
    let target = CString::new(at.as_os_str().as_bytes()).expect("path without NUL");
    let fstype = c"bpf";
    // SAFETY: valid C strings; no data argument.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io_err("mount bpffs on", at)(io::Error::last_os_error()));
    }
    tracing::info!(path = %at.display(), "mounted bpffs");
    Ok(())
}

/// Make sure `dir` exists on a bpffs: under `/sys/fs/bpf` that means mounting bpffs on
/// `/sys/fs/bpf` if it is not; anywhere else, mounting one on `dir` itself.
pub fn ensure(dir: &Path) -> Result<(), BpffsError> {
    let sys = Path::new("/sys/fs/bpf");
    if dir.starts_with(sys) {
        if !sys.exists() || !is_bpffs(sys)? {
            mount_bpffs(sys)?;
        }
    } else if !dir.exists() || !is_bpffs(dir)? {
        mount_bpffs(dir)?;
    }
    for sub in ["", "maps", "progs", "links"] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).map_err(io_err("create", &d))?;
    }
    Ok(())
}

/// The pin layout under the daemon's `--bpffs` directory.
#[derive(Clone, Debug)]
pub struct Pins {
    pub root: PathBuf,
}

impl Pins {
    pub fn map(&self, name: &str) -> PathBuf {
        self.root.join("maps").join(name)
    }
    pub fn prog(&self, name: &str) -> PathBuf {
        self.root.join("progs").join(name)
    }
    /// The tcx link of one program on one interface, by ifindex (`<ifindex>_ingress` /
    /// `<ifindex>_egress`; bpffs refuses names with a dot). By index, not name: pooled veths
    /// are renamed when a pod takes them, and the kernel's links follow the index too.
    pub fn link(&self, ifindex: u32, ingress: bool) -> PathBuf {
        self.root.join("links").join(format!(
            "{ifindex}_{}",
            if ingress { "ingress" } else { "egress" }
        ))
    }
    /// The link of `from_uplink` on the node's uplink (native routing). Named apart from the
    /// endpoints' `<ifindex>_<direction>` links, which reconciliation owns.
    pub fn uplink_link(&self, ifindex: u32) -> PathBuf {
        self.root.join("links").join(format!("uplink_{ifindex}"))
    }
    pub fn links_dir(&self) -> PathBuf {
        self.root.join("links")
    }

    /// Remove every pin (maps, programs, links) and the directory. Removing a link pin
    /// detaches its program; removing map pins frees the maps once nothing uses them.
    pub fn remove_all(&self) -> Result<(), BpffsError> {
        if self.root.exists() {
            std::fs::remove_dir_all(&self.root).map_err(io_err("remove", &self.root))?;
        }
        Ok(())
    }
}
