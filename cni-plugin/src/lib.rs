//! The sluice CNI plugin (`/opt/cni/bin/sluice`): an exec-style, synchronous program that the
//! runtime runs with `CNI_*` variables and the network configuration on stdin.
//!
//! `run` is the whole plugin as a function of its inputs: it validates, dispatches to one
//! command, and returns what goes to stdout and the exit status. Stdout carries only the
//! reply; logs go to stderr or the configured `logFile`.

pub mod commands;
pub mod daemon;
pub mod netlink;
pub mod netns;
pub mod spec;

use std::{ffi::OsString, io::Write};

use serde_json::json;
use spec::{
    config::{self, NetConf},
    env::{self, Verb},
    error::{CniError, Code},
    version::{self, Version},
};

/// What the process prints on stdout, and its exit status.
pub struct Reply {
    pub stdout: String,
    pub status: i32,
}

fn error_reply(e: &CniError, cni_version: &str) -> Reply {
    Reply {
        stdout: e.to_json(cni_version).to_string(),
        status: 1,
    }
}

/// Append a line to the configured log file (best effort: logging never fails a command).
pub fn log_line(conf: Option<&NetConf>, line: &str) {
    let Some(path) = conf.and_then(|c| c.log_file.as_ref()) else {
        return;
    };
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(f, "{} {line}", chrono_like_now());
    }
}

fn chrono_like_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

/// The `cniVersion` to write in replies before the configuration has been read: the one stdin
/// asks for when sluice supports it, else the latest.
fn reply_version(stdin: &[u8]) -> String {
    config::requested_version(stdin)
        .filter(|v| version::SUPPORTED.contains(&v.as_str()))
        .unwrap_or_else(|| version::LATEST.to_owned())
}

/// The `CNI_*` variables the plugin reads.
pub const ENV_VARS: [&str; 6] = [
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
];

/// `run` for a process environment, whose values may not be UTF-8. Such a value is refused
/// (4, naming the variable) rather than read as unset, which would report a variable the
/// runtime did set as missing, or silently use an unset `CNI_ARGS`.
pub fn run_os(getenv: impl Fn(&str) -> Option<OsString>, stdin: &[u8]) -> Reply {
    for k in ENV_VARS {
        if let Some(v) = getenv(k)
            && v.to_str().is_none()
        {
            let e = CniError::new(
                Code::InvalidEnv,
                format!("{k} is not valid UTF-8: {}", v.to_string_lossy()),
            );
            return error_reply(&e, &reply_version(stdin));
        }
    }
    run(|k| getenv(k).and_then(|v| v.into_string().ok()), stdin)
}

/// The plugin. `getenv` reads the environment, `stdin` is everything the runtime wrote.
///
/// Inputs are checked in libcni's skel order, so that a runtime sees the same code from sluice
/// as from a skel-based plugin when several things are wrong: missing variables and the
/// command; the configuration's JSON and `name`; the container id and interface name;
/// `cniVersion`, and whether it allows the verb; then the plugin's own keys and `CNI_ARGS`.
pub fn run(getenv: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Reply {
    let requested_version = reply_version(stdin);
    let raw = match env::read(&getenv) {
        Ok(e) => e,
        Err(e) => return error_reply(&e, &requested_version),
    };
    if raw.verb == Verb::Version {
        return Reply {
            stdout: json!({
                "cniVersion": requested_version,
                "supportedVersions": version::SUPPORTED,
            })
            .to_string(),
            status: 0,
        };
    }
    let obj = match config::decode(stdin) {
        Ok(o) => o,
        Err(e) => return error_reply(&e, &requested_version),
    };
    if let Err(e) = raw.validate_names() {
        return error_reply(&e, &requested_version);
    }
    let (cni_version, parsed_version) = match config::cni_version(&obj) {
        Ok(v) => v,
        Err(e) => return error_reply(&e, &requested_version),
    };
    // Verbs newer than the configuration's version do not exist for it.
    let minimum = match raw.verb {
        Verb::Check => Some(Version(0, 4, 0)),
        Verb::Status | Verb::Gc => Some(Version(1, 1, 0)),
        _ => None,
    };
    if let Some(min) = minimum
        && parsed_version < min
    {
        let e = CniError::new(
            Code::IncompatibleVersion,
            format!("config version {cni_version} does not allow {}", raw.verb.name()),
        );
        return error_reply(&e, &cni_version);
    }
    let conf = match config::from_object(obj, cni_version.clone(), parsed_version) {
        Ok(c) => c,
        Err(e) => return error_reply(&e, &cni_version),
    };
    let env = match raw.validate() {
        Ok(e) => e,
        Err(e) => return error_reply(&e, &cni_version),
    };
    let started = std::time::Instant::now();
    let outcome = match env.verb {
        Verb::Add => commands::add::add(&env, &conf).map(|r| Some(r.to_json(&conf.cni_version).to_string())),
        Verb::Del => commands::del::del(&env, &conf).map(|()| None),
        Verb::Check => commands::check::check(&env, &conf).map(|()| None),
        Verb::Status => commands::status::status(&conf).map(|()| None),
        Verb::Gc => commands::gc::gc(&conf).map(|()| None),
        Verb::Version => unreachable!("answered above"),
    };
    let ms = started.elapsed().as_secs_f64() * 1e3;
    match outcome {
        Ok(out) => {
            log_line(
                Some(&conf),
                &format!(
                    "{} {}/{} ok in {ms:.1} ms",
                    env.verb.name(),
                    env.container_id,
                    env.ifname
                ),
            );
            Reply {
                stdout: out.unwrap_or_default(),
                status: 0,
            }
        }
        Err(e) => {
            log_line(
                Some(&conf),
                &format!(
                    "{} {}/{} failed in {ms:.1} ms: code {} {}",
                    env.verb.name(),
                    env.container_id,
                    env.ifname,
                    e.code as u32,
                    e.msg
                ),
            );
            error_reply(&e, &conf.cni_version)
        }
    }
}
