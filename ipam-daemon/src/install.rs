//! Putting sluice on a node and taking it off again: the CNI plugin binary and its conflist
//! (`--install-cni`, done only once the daemon is ready, so a runtime never sees a network it
//! cannot use), and `--uninstall`, which leaves the node as it was.

use std::{
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use anyhow::Context;

use crate::cli::Config;

/// The conflist's file name: sorts before other plugins' (runtimes use the first one).
pub const CONFLIST: &str = "05-sluice.conflist";

/// The conflist sluice installs (CNI 1.0.0: the newest version podman 4.3 accepts).
pub fn conflist(socket: &Path) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "plugins": [{
            "type": "sluice",
            "daemonSocket": socket.display().to_string(),
            "capabilities": {"ips": true, "mac": true},
        }],
    })
}

/// Copy the plugin into the CNI bin dir atomically (write beside it, fsync, rename): a
/// runtime exec'ing it meanwhile gets the old or the new binary, never half of one.
fn install_binary(src: &Path, bin_dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(bin_dir).with_context(|| format!("creating {}", bin_dir.display()))?;
    let data = std::fs::read(src).with_context(|| format!("reading the plugin {}", src.display()))?;
    let dst = bin_dir.join("sluice");
    let tmp = bin_dir.join(format!(".sluice.{}", std::process::id()));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o755)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(&data)?;
        // The daemon's umask is 077: set the mode runtimes need explicitly.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o755))?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &dst).with_context(|| format!("installing {}", dst.display()))?;
    Ok(dst)
}

/// Install the plugin, then the conflist (in that order: the conflist announces a plugin
/// that is already there).
pub fn install(cfg: &Config) -> anyhow::Result<()> {
    let bin = install_binary(&cfg.cni_plugin_binary, &cfg.cni_bin_dir)?;
    std::fs::create_dir_all(&cfg.cni_conf_dir)
        .with_context(|| format!("creating {}", cfg.cni_conf_dir.display()))?;
    let path = cfg.cni_conf_dir.join(CONFLIST);
    let text = serde_json::to_vec_pretty(&conflist(&cfg.socket)).expect("serialize conflist");
    crate::fsutil::write_atomic(&path, &text, 0o644)
        .with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(plugin = %bin.display(), conflist = %path.display(), "CNI plugin installed");
    Ok(())
}

fn remove(path: &Path, what: &str, removed: &mut Vec<String>) -> anyhow::Result<()> {
    let res = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match res {
        Ok(()) => {
            removed.push(format!("{what} {}", path.display()));
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Take sluice off the node: conflist first (no new pods), then the plugin, the programs
/// on pod interfaces (pods lose their network), the pins, the gateway device and the state.
/// Everything absent already is skipped. Returns what was removed.
pub async fn uninstall(cfg: &Config) -> anyhow::Result<Vec<String>> {
    let mut removed = Vec::new();
    remove(&cfg.cni_conf_dir.join(CONFLIST), "conflist", &mut removed)?;
    remove(&cfg.cni_bin_dir.join("sluice"), "plugin", &mut removed)?;
    let hostnet = crate::hostnet::HostNet::connect()?;
    // Programs still on clsact filters (tcx links go with the pins below).
    let mut on_clsact = 0;
    for (index, name) in hostnet.links().await? {
        if name.len() == 14 && name.starts_with("sl") && hostnet.has_clsact(index).await.unwrap_or(false) {
            hostnet.delete_clsact(index).await?;
            on_clsact += 1;
        }
    }
    if on_clsact > 0 {
        removed.push(format!("clsact programs on {on_clsact} pod interfaces"));
    }
    remove(&cfg.bpffs, "bpffs pins (maps, programs, tcx links)", &mut removed)?;
    if let Some(l) = hostnet.link(&cfg.gateway_device).await? {
        hostnet.delete_link(l.index).await?;
        removed.push(format!("gateway device {}", cfg.gateway_device));
    }
    remove(&cfg.state_dir, "state directory", &mut removed)?;
    if let Some(dir) = cfg.socket.parent() {
        remove(dir, "socket directory", &mut removed)?;
    }
    Ok(removed)
}
