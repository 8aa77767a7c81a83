//! The `CNI_*` environment, validated the way libcni's `skel` does: which variables each verb
//! needs, the container-id pattern and the interface-name rules.

use super::{
    args::{self, CniArgs},
    error::{CniError, Code},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Verb {
    pub fn name(self) -> &'static str {
        match self {
            Verb::Add => "ADD",
            Verb::Del => "DEL",
            Verb::Check => "CHECK",
            Verb::Status => "STATUS",
            Verb::Gc => "GC",
            Verb::Version => "VERSION",
        }
    }

    /// ADD, DEL and CHECK act on one attachment (container id + interface name); STATUS, GC
    /// and VERSION act on the network as a whole and get neither.
    pub fn is_attachment(self) -> bool {
        matches!(self, Verb::Add | Verb::Del | Verb::Check)
    }
}

/// The environment of one invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Env {
    pub verb: Verb,
    pub container_id: String,
    /// `CNI_NETNS`: required for ADD and CHECK; DEL may come without (the netns is gone).
    pub netns: Option<String>,
    pub ifname: String,
    pub args: CniArgs,
    pub path: String,
}

/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`
pub fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The kernel's interface-name rules (net/core/dev.c `dev_valid_name`).
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let bad = |why: &str| {
        Err(CniError::new(
            Code::InvalidEnv,
            format!("CNI_IFNAME {name:?}: {why}"),
        ))
    };
    if name.is_empty() {
        return bad("interface name is empty");
    }
    if name.len() > 15 {
        return bad("interface name is longer than 15 characters");
    }
    if name == "." || name == ".." {
        return bad("interface name is . or ..");
    }
    if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        return bad("interface name contains / or : or whitespace");
    }
    Ok(())
}

/// The environment as read, before the container id, the interface name and `CNI_ARGS` are
/// checked: libcni's skel reports a missing variable first, then a bad configuration (JSON,
/// `name`), and only then a bad container id or interface name; `run` keeps that order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEnv {
    pub verb: Verb,
    pub container_id: String,
    pub netns: Option<String>,
    pub ifname: String,
    pub args: String,
    pub path: String,
}

/// Read the environment: the command and the variables it requires (skel's
/// `getCmdArgsFromEnv`). `get` returns a variable's value (empty = unset).
pub fn read(get: impl Fn(&str) -> Option<String>) -> Result<RawEnv, CniError> {
    let var = |k: &str| get(k).unwrap_or_default();
    let command = var("CNI_COMMAND");
    let verb = match command.as_str() {
        "ADD" => Verb::Add,
        "DEL" => Verb::Del,
        "CHECK" => Verb::Check,
        "STATUS" => Verb::Status,
        "GC" => Verb::Gc,
        "VERSION" => Verb::Version,
        "" => {
            return Err(CniError::new(
                Code::InvalidEnv,
                "required env variables [CNI_COMMAND] missing",
            ));
        }
        other => {
            return Err(CniError::new(
                Code::InvalidEnv,
                format!("unknown CNI_COMMAND: {other:?}"),
            ));
        }
    };
    let attachment_verb = verb.is_attachment();
    let needs_netns = matches!(verb, Verb::Add | Verb::Check);
    let mut missing = Vec::new();
    for (k, needed) in [
        ("CNI_CONTAINERID", attachment_verb),
        ("CNI_NETNS", needs_netns),
        ("CNI_IFNAME", attachment_verb),
        ("CNI_PATH", attachment_verb),
    ] {
        if needed && var(k).is_empty() {
            missing.push(k);
        }
    }
    if !missing.is_empty() {
        return Err(CniError::new(
            Code::InvalidEnv,
            format!("required env variables [{}] missing", missing.join(",")),
        ));
    }
    Ok(RawEnv {
        verb,
        container_id: var("CNI_CONTAINERID"),
        netns: Some(var("CNI_NETNS")).filter(|n| !n.is_empty()),
        ifname: var("CNI_IFNAME"),
        args: var("CNI_ARGS"),
        path: var("CNI_PATH"),
    })
}

impl RawEnv {
    /// The container id and interface name (skel's `ValidateContainerID` and
    /// `ValidateInterfaceName`), for the verbs that have them.
    pub fn validate_names(&self) -> Result<(), CniError> {
        if !self.verb.is_attachment() {
            return Ok(());
        }
        if !valid_name(&self.container_id) {
            return Err(CniError::new(
                Code::InvalidEnv,
                format!(
                    "CNI_CONTAINERID {:?}: invalid characters in containerID",
                    self.container_id
                ),
            ));
        }
        validate_ifname(&self.ifname)
    }

    /// Check the names and parse `CNI_ARGS`.
    ///
    /// `CNI_ARGS` is read only where it is used: ADD (and CHECK, which runs with ADD's
    /// arguments) refuse a malformed one. DEL ignores it: it tears down by container id and
    /// interface name alone, and must not fail for an argument a newer, stricter plugin
    /// refuses but the one that ran ADD accepted. VERSION, STATUS and GC get no `CNI_ARGS` from
    /// the spec, so whatever a runtime leaves in the variable cannot fail them.
    pub fn validate(self) -> Result<Env, CniError> {
        self.validate_names()?;
        let args = match self.verb {
            Verb::Add | Verb::Check => args::parse(&self.args)?,
            Verb::Del => args::parse(&self.args).unwrap_or_default(),
            Verb::Status | Verb::Gc | Verb::Version => CniArgs::default(),
        };
        Ok(Env {
            verb: self.verb,
            container_id: self.container_id,
            netns: self.netns,
            ifname: self.ifname,
            args,
            path: self.path,
        })
    }
}

/// Read and validate the environment in one step (`read`, then `RawEnv::validate`).
pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
    read(get)?.validate()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<Env, CniError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        from_env(|k| m.get(k).cloned())
    }

    const ADD: [(&str, &str); 5] = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ];

    #[test]
    fn add_ok() {
        let e = env(&ADD).unwrap();
        assert_eq!(e.verb, Verb::Add);
        assert_eq!(e.netns.as_deref(), Some("/run/netns/x"));
    }

    #[test]
    fn missing_vars_are_listed() {
        let e = env(&[("CNI_COMMAND", "ADD")]).unwrap_err();
        assert_eq!(e.code, Code::InvalidEnv);
        assert!(
            e.msg.contains("CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH"),
            "{}",
            e.msg
        );
        // DEL may come without a netns.
        let mut del = ADD.to_vec();
        del[0] = ("CNI_COMMAND", "DEL");
        del.remove(2);
        assert_eq!(env(&del).unwrap().netns, None);
        // VERSION, STATUS and GC need only the command.
        for v in ["VERSION", "STATUS", "GC"] {
            assert!(env(&[("CNI_COMMAND", v)]).is_ok());
        }
    }

    #[test]
    fn bad_command_container_and_ifname() {
        assert_eq!(
            env(&[("CNI_COMMAND", "FROB")]).unwrap_err().code,
            Code::InvalidEnv
        );
        let mut bad = ADD.to_vec();
        bad[1] = ("CNI_CONTAINERID", "-abc");
        let e = env(&bad).unwrap_err();
        assert_eq!(e.code, Code::InvalidEnv);
        assert!(e.msg.contains("-abc"));
        for name in ["", "a-very-long-interface", ".", "..", "a/b", "a:b", "a b"] {
            let mut bad = ADD.to_vec();
            bad[3] = ("CNI_IFNAME", name);
            assert_eq!(env(&bad).unwrap_err().code, Code::InvalidEnv, "{name:?}");
        }
    }

    #[test]
    fn cni_args_only_where_used() {
        let with_args = |verb: &'static str| {
            let mut e = ADD.to_vec();
            e[0] = ("CNI_COMMAND", verb);
            e.push(("CNI_ARGS", "junk;IP=nope"));
            env(&e)
        };
        assert_eq!(with_args("ADD").unwrap_err().code, Code::InvalidEnv);
        assert_eq!(with_args("CHECK").unwrap_err().code, Code::InvalidEnv);
        assert_eq!(with_args("DEL").unwrap().args, CniArgs::default());
        for v in ["VERSION", "STATUS", "GC"] {
            assert!(with_args(v).is_ok(), "{v}");
        }
    }

    #[test]
    fn valid_name_pattern() {
        assert!(valid_name("a"));
        assert!(valid_name("A_b.c-9"));
        assert!(!valid_name(""));
        assert!(!valid_name("_a"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("ä"));
    }
}
