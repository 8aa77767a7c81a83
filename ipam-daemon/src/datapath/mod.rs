//! The eBPF datapath as the daemon holds it: the embedded object loaded (or re-adopted from its
//! pins), the programs attached with tcx to each pod's host veth through pinned links, and
//! typed access to the maps.
//!
//! Everything lives under `--bpffs`: `maps/<NAME>`, `progs/<name>`, `links/<ifindex>_<dir>`.
//! A restarted daemon with the same object re-opens all of it and disturbs nothing; a daemon
//! with a new object swaps the program behind every link atomically (`BPF_LINK_UPDATE`) and
//! keeps the maps; a daemon whose ABI differs from the pinned maps' refuses to start unless
//! told `--reset-datapath` (which detaches everything: pods lose traffic until re-registered).

mod bpffs;
pub mod maps;
mod object;

use std::{
    io,
    path::{Path, PathBuf},
    sync::Mutex,
};

use aya::{
    EbpfLoader,
    maps::{Map, MapData, MapInfo},
    programs::{
        LinkOrder, SchedClassifier, TcAttachType,
        links::{FdLink, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions},
    },
    util::KernelVersion,
};
pub use bpffs::Pins;
pub use maps::{DatapathMaps, MapSizes};
use serde::{Deserialize, Serialize};
use sluice_common::{ABI_VERSION, maps as names, programs};

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(transparent)]
    Bpffs(#[from] bpffs::BpffsError),
    #[error("kernel {found} is too old: sluice needs {feature} (Linux {needed} or later)")]
    KernelTooOld {
        feature: &'static str,
        needed: &'static str,
        found: String,
    },
    #[error(
        "the pinned datapath under {dir} was written by an incompatible sluiced ({why}); restart with --reset-datapath to replace it (this detaches every pod until it is re-registered)"
    )]
    Incompatible { dir: PathBuf, why: String },
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("attaching {prog} to {ifname}: {source}")]
    Attach {
        prog: &'static str,
        ifname: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// How this daemon came by its programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadOutcome {
    /// Nothing was pinned: loaded and pinned everything.
    Fresh,
    /// Same object as the pinned one: re-opened programs, maps and links untouched.
    Readopted,
    /// Another object was pinned: loaded ours and swapped it in behind every link.
    Upgraded,
}

/// What the datapath needs from the daemon's configuration.
#[derive(Clone, Debug)]
pub struct DatapathOptions {
    pub bpffs: PathBuf,
    pub state_dir: PathBuf,
    pub sizes: MapSizes,
    pub reset: bool,
}

/// Recorded in `<state-dir>/datapath.json`: which object and ABI wrote the pins.
#[derive(Debug, Serialize, Deserialize)]
struct PinnedRecord {
    abi: u32,
    object: String,
}

/// Kernel facts that decide whether sluice can run (reported by `sluicectl status`).
#[derive(Clone, Debug, Serialize)]
pub struct KernelFeatures {
    pub release: String,
    pub features: Vec<String>,
}

impl KernelFeatures {
    pub fn tcx(&self) -> bool {
        self.features.iter().any(|f| f == "tcx")
    }
}

/// Check the kernel for what the datapath needs, refusing with the missing feature's name.
pub fn check_kernel() -> Result<KernelFeatures, DatapathError> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let current = KernelVersion::current().ok();
    let at_least = |maj, min| current.is_some_and(|v| v >= KernelVersion::new(maj, min, 0));
    // bpf_redirect_peer (5.10) implies ring buffers (5.8) and LPM tries.
    if !at_least(5, 10) {
        return Err(DatapathError::KernelTooOld {
            feature: "bpf_redirect_peer (same-node forwarding into a pod's namespace)",
            needed: "5.10",
            found: release,
        });
    }
    let mut features = vec![
        "bpf_redirect_peer".to_owned(),
        "ringbuf".to_owned(),
        "lpm_trie".to_owned(),
    ];
    // tcx (6.6): bpf_link attachment. Without it sluice stays on clsact filters.
    if at_least(6, 6) {
        features.insert(0, "tcx".to_owned());
    }
    if Path::new("/sys/kernel/btf/vmlinux").exists() {
        features.push("btf".into());
    }
    Ok(KernelFeatures { release, features })
}

pub struct Datapath {
    pins: Pins,
    from_pod: Mutex<SchedClassifier>,
    to_pod: Mutex<SchedClassifier>,
    from_uplink: Mutex<SchedClassifier>,
    pub maps: DatapathMaps,
    pub outcome: LoadOutcome,
    pub kernel: KernelFeatures,
    /// Verifier-processed instruction counts, per program (for `sluicectl status` and notes).
    pub verified_insns: Vec<(String, u32)>,
    program_ids: Vec<u32>,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DatapathError + 'a {
    move |source| DatapathError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

impl Datapath {
    /// Load or re-adopt the datapath under `opts.bpffs`.
    pub fn open(opts: &DatapathOptions) -> Result<Self, DatapathError> {
        let kernel = check_kernel()?;
        let pins = Pins {
            root: opts.bpffs.clone(),
        };
        if opts.reset {
            tracing::warn!(dir = %pins.root.display(), "--reset-datapath: removing every pin");
            pins.remove_all()?;
        }
        bpffs::ensure(&pins.root)?;

        let record_path = opts.state_dir.join("datapath.json");
        let previous: Option<PinnedRecord> = std::fs::read(&record_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let any_map_pinned = names::PINNED.iter().any(|n| pins.map(n).exists());
        if any_map_pinned {
            check_pinned_maps(&pins, previous.as_ref())?;
        }

        let mut loader = EbpfLoader::new();
        let map_paths: Vec<(&str, PathBuf)> = names::PINNED.iter().map(|n| (*n, pins.map(n))).collect();
        for (name, path) in &map_paths {
            loader.map_pin_path(name, path.as_path());
        }
        opts.sizes.apply(&mut loader);
        let mut ebpf = loader.load(object::OBJECT)?;

        let fingerprint = object::fingerprint();
        let progs_pinned = programs::ALL.iter().all(|n| pins.prog(n).exists());
        // An older daemon may have pinned fewer programs: its links still need the swap.
        let any_prog_pinned = programs::ALL.iter().any(|n| pins.prog(n).exists());
        let same_object = previous.as_ref().is_some_and(|p| p.object == fingerprint);
        let outcome = if progs_pinned && same_object {
            LoadOutcome::Readopted
        } else {
            for name in programs::ALL {
                let prog: &mut SchedClassifier = ebpf
                    .program_mut(name)
                    .ok_or_else(|| DatapathError::Program {
                        name,
                        source: aya::programs::ProgramError::UnexpectedProgramType,
                    })?
                    .try_into()
                    .map_err(|source| DatapathError::Program { name, source })?;
                prog.load()
                    .map_err(|source| DatapathError::Program { name, source })?;
                let path = pins.prog(name);
                // Replace the pin of an older program: the links keep their own reference.
                if path.exists() {
                    std::fs::remove_file(&path).map_err(io_err("unpin", &path))?;
                }
                prog.pin(&path).map_err(|e| DatapathError::Program {
                    name,
                    source: aya::programs::ProgramError::IOError(io::Error::other(e.to_string())),
                })?;
            }
            if any_prog_pinned {
                LoadOutcome::Upgraded
            } else {
                LoadOutcome::Fresh
            }
        };
        let open_prog = |name: &'static str| {
            SchedClassifier::from_pin(pins.prog(name))
                .map_err(|source| DatapathError::Program { name, source })
        };
        let from_pod = open_prog(programs::FROM_POD)?;
        let to_pod = open_prog(programs::TO_POD)?;
        let from_uplink = open_prog(programs::FROM_UPLINK)?;
        let mut verified_insns = Vec::new();
        let mut program_ids = Vec::new();
        for (name, p) in [
            (programs::FROM_POD, &from_pod),
            (programs::TO_POD, &to_pod),
            (programs::FROM_UPLINK, &from_uplink),
        ] {
            if let Ok(info) = p.info() {
                verified_insns.push((name.to_owned(), info.verified_instruction_count().unwrap_or(0)));
                program_ids.push(info.id());
            }
        }

        let maps = DatapathMaps::take(&mut ebpf, &pins)?;
        let dp = Self {
            pins,
            from_pod: Mutex::new(from_pod),
            to_pod: Mutex::new(to_pod),
            from_uplink: Mutex::new(from_uplink),
            maps,
            outcome,
            kernel,
            verified_insns,
            program_ids,
        };
        if outcome == LoadOutcome::Upgraded {
            dp.swap_programs_behind_links()?;
        }
        let record = PinnedRecord {
            abi: ABI_VERSION,
            object: fingerprint,
        };
        crate::fsutil::write_atomic(
            &record_path,
            &serde_json::to_vec_pretty(&record).expect("serialize record"),
            0o600,
        )
        .map_err(io_err("write", &record_path))?;
        Ok(dp)
    }

    /// Program ids, for aya-log readers (`EbpfLogger::init_from_id`).
    pub fn program_ids(&self) -> &[u32] {
        &self.program_ids
    }

    /// After an upgrade: point every pinned link at the newly loaded program, atomically, so
    /// pods never see a moment without a program.
    fn swap_programs_behind_links(&self) -> Result<(), DatapathError> {
        let dir = self.pins.links_dir();
        let entries = std::fs::read_dir(&dir).map_err(io_err("list", &dir))?;
        let mut swapped = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let (prog, prog_name) = if name.starts_with("uplink_") {
                (&self.from_uplink, programs::FROM_UPLINK)
            } else if name.ends_with("_ingress") {
                (&self.from_pod, programs::FROM_POD)
            } else if name.ends_with("_egress") {
                (&self.to_pod, programs::TO_POD)
            } else {
                continue;
            };
            let ifname = name
                .rsplit_once('.')
                .map(|(i, _)| i.to_owned())
                .unwrap_or_default();
            let attach_err = |e: Box<dyn std::error::Error + Send + Sync>| DatapathError::Attach {
                prog: prog_name,
                ifname: ifname.clone(),
                source: e,
            };
            let pinned = PinnedLink::from_pin(&path).map_err(|e| attach_err(Box::new(e)))?;
            // Unpinning keeps the link alive while we hold its fd.
            let fd_link: FdLink = pinned.unpin().map_err(|e| attach_err(Box::new(e)))?;
            let link = SchedClassifierLink::try_from(fd_link).map_err(|e| attach_err(Box::new(e)))?;
            let mut prog = prog.lock().expect("program lock");
            let id = prog.attach_to_link(link).map_err(|e| attach_err(Box::new(e)))?;
            let link = prog.take_link(id).map_err(|e| attach_err(Box::new(e)))?;
            let fd_link: FdLink = link
                .try_into()
                .map_err(|e: aya::programs::links::LinkError| attach_err(Box::new(e)))?;
            fd_link.pin(&path).map_err(|e| attach_err(Box::new(e)))?;
            swapped += 1;
        }
        tracing::info!(links = swapped, "upgraded the program behind every pinned link");
        Ok(())
    }

    /// Attach one program: `from_pod` on ingress (`ingress`) or `to_pod` on egress.
    pub fn attach_one(&self, ifname: &str, ifindex: u32, ingress: bool) -> Result<(), DatapathError> {
        let (prog, prog_name) = if ingress {
            (&self.from_pod, programs::FROM_POD)
        } else {
            (&self.to_pod, programs::TO_POD)
        };
        let path = self.pins.link(ifindex, ingress);
        if path.exists() {
            std::fs::remove_file(&path).map_err(io_err("unpin", &path))?;
        }
        let attach_type = if ingress {
            TcAttachType::Ingress
        } else {
            TcAttachType::Egress
        };
        attach_tcx_pinned(prog, prog_name, ifname, attach_type, &path)
    }

    /// Attach `from_uplink` to the node's uplink (tcx ingress) and pin the link. A link already
    /// pinned for this interface is kept as it is.
    pub fn attach_uplink(&self, ifname: &str, ifindex: u32) -> Result<(), DatapathError> {
        let path = self.pins.uplink_link(ifindex);
        if path.exists() {
            return Ok(());
        }
        attach_tcx_pinned(
            &self.from_uplink,
            programs::FROM_UPLINK,
            ifname,
            TcAttachType::Ingress,
            &path,
        )
    }

    /// Detach `from_uplink` from every interface but `keep` (removing a pin ends its link).
    pub fn detach_uplinks(&self, keep: Option<u32>) -> Result<(), DatapathError> {
        let keep = keep.map(|i| self.pins.uplink_link(i));
        let dir = self.pins.links_dir();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let is_uplink = entry.file_name().to_string_lossy().starts_with("uplink_");
            if is_uplink && Some(&path) != keep.as_ref() {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("unpin", &path)(e)),
                }
            }
        }
        Ok(())
    }

    /// Attach both programs with the classic clsact qdisc and cls_bpf filters (direct action).
    /// Unlike tcx this does not wait for an RCU grace period (the filter list is published with
    /// call_rcu), so it costs a fraction of a millisecond: this is how an ADD attaches before it
    /// returns; `attach::to_tcx` later moves the endpoint to tcx links. Filters belong to the
    /// device, not to a file descriptor: they outlive the daemon without pins.
    pub fn attach_clsact(&self, ifname: &str) -> Result<(), DatapathError> {
        match aya::programs::tc::qdisc_add_clsact(ifname) {
            Ok(()) => {}
            Err(aya::programs::tc::TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => {
                return Err(DatapathError::Attach {
                    prog: "clsact qdisc",
                    ifname: ifname.to_owned(),
                    source: Box::new(e),
                });
            }
        }
        for (prog, prog_name, attach_type) in [
            (&self.from_pod, programs::FROM_POD, TcAttachType::Ingress),
            (&self.to_pod, programs::TO_POD, TcAttachType::Egress),
        ] {
            let mut prog = prog.lock().expect("program lock");
            let attach_err = |e: Box<dyn std::error::Error + Send + Sync>| DatapathError::Attach {
                prog: prog_name,
                ifname: ifname.to_owned(),
                source: e,
            };
            let id = prog
                .attach_with_options(ifname, attach_type, TcAttachOptions::Netlink(Default::default()))
                .map_err(|e| attach_err(Box::new(e)))?;
            let link = prog.take_link(id).map_err(|e| attach_err(Box::new(e)))?;
            // The filter must stay when this handle goes (dropping it would delete it): it is
            // removed explicitly by `detach_clsact_program` or with the device.
            std::mem::forget(link);
        }
        Ok(())
    }

    /// Remove the clsact filter of one program from an interface. Absent is fine.
    pub fn detach_clsact_program(&self, ifname: &str, ingress: bool) -> Result<(), DatapathError> {
        let (attach_type, name) = if ingress {
            (TcAttachType::Ingress, programs::FROM_POD)
        } else {
            (TcAttachType::Egress, programs::TO_POD)
        };
        match aya::programs::tc::qdisc_detach_program(ifname, attach_type, name) {
            Ok(()) => Ok(()),
            Err(aya::programs::tc::TcError::IoError(e)) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(DatapathError::Attach {
                prog: name,
                ifname: ifname.to_owned(),
                source: Box::new(e),
            }),
        }
    }

    /// Detach both programs from an interface (remove the link pins). Succeeds when they are
    /// already gone.
    pub fn detach(&self, ifindex: u32) -> Result<(), DatapathError> {
        for ingress in [true, false] {
            let path = self.pins.link(ifindex, ingress);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("unpin", &path)(e)),
            }
        }
        Ok(())
    }

    /// Are both links of this interface pinned?
    pub fn is_attached(&self, ifindex: u32) -> bool {
        self.pins.link(ifindex, true).exists() && self.pins.link(ifindex, false).exists()
    }

    /// ifindexes of interfaces that have a pinned link (for reconciliation).
    pub fn attached_interfaces(&self) -> Vec<u32> {
        let mut out: Vec<u32> = std::fs::read_dir(self.pins.links_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.rsplit_once('_')
                    .filter(|(_, dir)| *dir == "ingress" || *dir == "egress")
                    .and_then(|(i, _)| i.parse().ok())
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// Attach `prog` with a tcx link (appended after what is there) and pin the link at `path`:
/// the pin, not this process, keeps it alive.
fn attach_tcx_pinned(
    prog: &Mutex<SchedClassifier>,
    prog_name: &'static str,
    ifname: &str,
    attach_type: TcAttachType,
    path: &Path,
) -> Result<(), DatapathError> {
    let attach_err = |e: Box<dyn std::error::Error + Send + Sync>| DatapathError::Attach {
        prog: prog_name,
        ifname: ifname.to_owned(),
        source: e,
    };
    let mut prog = prog.lock().expect("program lock");
    let id = prog
        .attach_with_options(
            ifname,
            attach_type,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
        .map_err(|e| attach_err(Box::new(e)))?;
    let link = prog.take_link(id).map_err(|e| attach_err(Box::new(e)))?;
    drop(prog);
    let fd_link: FdLink = link
        .try_into()
        .map_err(|e: aya::programs::links::LinkError| attach_err(Box::new(e)))?;
    fd_link.pin(path).map_err(|e| attach_err(Box::new(e)))?;
    Ok(())
}

/// Refuse pinned maps this daemon cannot use: another ABI, or a layout that differs.
fn check_pinned_maps(pins: &Pins, previous: Option<&PinnedRecord>) -> Result<(), DatapathError> {
    let dir = pins.root.clone();
    if let Some(p) = previous
        && p.abi != ABI_VERSION
    {
        return Err(DatapathError::Incompatible {
            dir,
            why: format!("ABI {} pinned, this daemon speaks ABI {ABI_VERSION}", p.abi),
        });
    }
    let obj = aya_obj::Object::parse(object::OBJECT).map_err(|e| DatapathError::Incompatible {
        dir: dir.clone(),
        why: format!("cannot parse own object: {e}"),
    })?;
    for name in names::PINNED {
        let path = pins.map(name);
        if !path.exists() {
            continue;
        }
        let info = MapInfo::from_pin(&path).map_err(|source| DatapathError::Map { name, source })?;
        if let Some(def) = obj.maps.get(name) {
            // Ring buffers and arrays of per-CPU values report sizes differently; compare
            // key/value sizes where they are meaningful.
            let key_ok = def.key_size() == info.key_size();
            let value_ok = def.value_size() == info.value_size();
            if !key_ok || !value_ok {
                return Err(DatapathError::Incompatible {
                    dir,
                    why: format!(
                        "map {name} has key/value size {}/{} pinned, {}/{} expected",
                        info.key_size(),
                        info.value_size(),
                        def.key_size(),
                        def.value_size()
                    ),
                });
            }
        }
    }
    Ok(())
}

/// A map taken out of the loaded object, by ABI name.
fn take_map(ebpf: &mut aya::Ebpf, name: &'static str) -> Result<Map, DatapathError> {
    ebpf.take_map(name).ok_or(DatapathError::Map {
        name,
        source: aya::maps::MapError::InvalidName { name: name.into() },
    })
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Datapath>();
    let _: Option<MapData> = None;
}
