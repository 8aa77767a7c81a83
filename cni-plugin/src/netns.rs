//! Network namespaces by path: open one, check it really is a network namespace, and run
//! code inside it (the calling thread switches with `setns` and always switches back).

use std::{
    fs::File,
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    path::{Path, PathBuf},
};

const NSFS_MAGIC: i64 = 0x6e73_6673;
const PROC_SUPER_MAGIC: i64 = 0x9fa0;

#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum NetNsError {
    #[error("netns {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a network namespace")]
    NotNetns { path: PathBuf },
    #[error("entering netns {path}: {source}")]
    Enter {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl NetNs {
    /// Open a namespace file (`/run/netns/x`, `/proc/<pid>/ns/net`, ...).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, NetNsError> {
        let path = path.as_ref().to_owned();
        let file = File::open(&path).map_err(|source| NetNsError::Open {
            path: path.clone(),
            source,
        })?;
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and out-pointer.
        if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } != 0 {
            return Err(NetNsError::Open {
                path,
                source: io::Error::last_os_error(),
            });
        }
        let magic = st.f_type as i64;
        if magic != NSFS_MAGIC && magic != PROC_SUPER_MAGIC {
            return Err(NetNsError::NotNetns { path });
        }
        // The file must be a *network* namespace: setns with CLONE_NEWNET checks that, so
        // try a round trip now rather than fail half-way through an ADD.
        let ns = Self { file, path };
        let here = Self::current()?;
        ns.enter().map_err(|_| NetNsError::NotNetns {
            path: ns.path.clone(),
        })?;
        here.enter()?;
        Ok(ns)
    }

    /// The calling thread's network namespace.
    pub fn current() -> Result<Self, NetNsError> {
        let path = PathBuf::from("/proc/thread-self/ns/net");
        let file = File::open(&path).map_err(|source| NetNsError::Open {
            path: path.clone(),
            source,
        })?;
        Ok(Self { file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Switch the calling thread into this namespace.
    pub fn enter(&self) -> Result<(), NetNsError> {
        // SAFETY: valid fd; CLONE_NEWNET restricts it to network namespaces.
        if unsafe { libc::setns(self.file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(NetNsError::Enter {
                path: self.path.clone(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Run `f` inside this namespace and come back, whatever `f` returns.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T, NetNsError> {
        let here = Self::current()?;
        self.enter()?;
        let out = f();
        here.enter()?;
        Ok(out)
    }

    /// Is this the namespace the calling thread is in? (A plugin must not configure its own.)
    pub fn is_current(&self) -> Result<bool, NetNsError> {
        let here = Self::current()?;
        let id = |f: &File| -> io::Result<(u64, u64)> {
            let m = f.metadata()?;
            use std::os::unix::fs::MetadataExt;
            Ok((m.dev(), m.ino()))
        };
        let err = |source| NetNsError::Open {
            path: self.path.clone(),
            source,
        };
        Ok(id(&self.file).map_err(err)? == id(&here.file).map_err(err)?)
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
