//! The network configuration on stdin, e.g.
//! `{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"sluice","daemonSocket":"/run/sluice/sluiced.sock"}`.
//!
//! Fields sluice does not know are tolerated. Known fields are checked one by one so that a
//! refusal names the key and the value at fault.

use std::{net::IpAddr, path::PathBuf};

use ipnetwork::IpNetwork;
use serde_json::{Map, Value};
use sluice_api::Attachment;

use super::{
    env::valid_name,
    error::{CniError, Code},
    version::{self, Version},
};

#[derive(Clone, Debug, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    pub version: Version,
    pub name: String,
    pub plugin_type: String,
    /// `daemonSocket`: where sluiced listens (default `/run/sluice/sluiced.sock`).
    pub daemon_socket: PathBuf,
    /// `mtu`: pod interface MTU (default: what sluiced says).
    pub mtu: Option<u32>,
    /// `prevResult`: the result so far in the chain (ADD/CHECK/DEL).
    pub prev_result: Option<Value>,
    /// Addresses asked for: `runtimeConfig.ips` and the `args.cni.ips` convention.
    pub requested_ips: Vec<IpAddr>,
    /// MAC asked for: `runtimeConfig.mac` or `args.cni.mac`.
    pub requested_mac: Option<[u8; 6]>,
    /// `dns`: passed through to the result.
    pub dns: Option<Value>,
    /// GC: `cni.dev/valid-attachments` (or the older `cni.dev/attachments`).
    pub valid_attachments: Option<Vec<Attachment>>,
    /// `logFile`: where the plugin appends its log lines (default: stderr).
    pub log_file: Option<PathBuf>,
}

fn invalid(msg: String) -> CniError {
    CniError::new(Code::InvalidConfig, msg)
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut m = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return None;
        }
        m[i] = u8::from_str_radix(p, 16).ok()?;
    }
    Some(m)
}

/// A MAC a pod may use: unicast (bit 0 of the first octet clear) and not all zeros.
fn usable_mac(key: &str, s: &str) -> Result<[u8; 6], CniError> {
    let m = parse_mac(s).ok_or_else(|| invalid(format!("{key}: {s:?} is not a MAC address")))?;
    if m[0] & 1 != 0 || m == [0; 6] {
        return Err(invalid(format!("{key}: {s} is not a unicast MAC address")));
    }
    Ok(m)
}

fn ip_list(key: &str, v: &Value) -> Result<Vec<IpAddr>, CniError> {
    let arr = v
        .as_array()
        .ok_or_else(|| invalid(format!("{key} must be a list of addresses")))?;
    arr.iter()
        .map(|e| {
            let s = e
                .as_str()
                .ok_or_else(|| invalid(format!("{key}: {e} is not a string")))?;
            parse_ip_request(s).ok_or_else(|| invalid(format!("{key}: {s:?} is not an IP address")))
        })
        .collect()
}

/// A requested address: `10.0.0.5` or, as the `ips` convention writes it, `10.0.0.5/24`. Only
/// the address is used (sluice assigns host routes), but a prefix must still be a valid one:
/// `10.0.0.5/99` or `10.0.0.5/x` is a typo to report, not something to ignore.
pub fn parse_ip_request(s: &str) -> Option<IpAddr> {
    s.parse::<IpNetwork>().ok().map(|n| n.ip())
}

/// An absolute filesystem path from the configuration (`daemonSocket`, `logFile`). Relative
/// paths would depend on the runtime's working directory, and a NUL cannot be in a path: both
/// are configuration mistakes to report up front rather than as a later I/O failure.
fn absolute_path(key: &str, p: &str) -> Result<PathBuf, CniError> {
    if !p.starts_with('/') {
        return Err(invalid(format!("{key} {p:?} must be an absolute path")));
    }
    if p.contains('\0') {
        return Err(invalid(format!("{key} {p:?} contains a NUL character")));
    }
    Ok(PathBuf::from(p))
}

/// `sockaddr_un.sun_path` holds 108 bytes including the terminating NUL. A longer socket path
/// cannot be connected to at all, which the plugin would otherwise report as "sluiced is
/// unreachable, try again later" (11) forever instead of as the configuration error it is.
const SUN_PATH_MAX: usize = 107;

fn attachments(key: &str, v: &Value) -> Result<Vec<Attachment>, CniError> {
    let arr = v
        .as_array()
        .ok_or_else(|| invalid(format!("{key} must be a list")))?;
    arr.iter()
        .map(|e| {
            let cid = e.get("containerID").and_then(Value::as_str);
            let ifname = e.get("ifname").and_then(Value::as_str);
            match (cid, ifname) {
                (Some(c), Some(i)) => Ok(Attachment {
                    container_id: c.to_owned(),
                    ifname: i.to_owned(),
                }),
                _ => Err(invalid(format!(
                    "{key}: {e} must have string keys containerID and ifname"
                ))),
            }
        })
        .collect()
}

fn get_str<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(invalid(format!("{key} must be a string, not {other}"))),
    }
}

fn get_object<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(other) => Err(invalid(format!("{key} must be an object, not {other}"))),
    }
}

/// Name a nested key by its full path (`runtimeConfig.mac`, not `mac`) in a type error.
fn prefixed(parent: &str, mut e: CniError) -> CniError {
    e.msg = format!("{parent}.{}", e.msg);
    e
}

/// Only `cniVersion`, for VERSION requests (`{"cniVersion": "..."}`).
pub fn requested_version(stdin: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(stdin).ok()?;
    v.get("cniVersion")?.as_str().map(str::to_owned)
}

/// Stage one, libcni's `validateConfig`: a JSON object with a valid `name`. libcni checks this
/// before the container id and the interface name, and those before `cniVersion`.
pub fn decode(stdin: &[u8]) -> Result<Map<String, Value>, CniError> {
    let v: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            Code::Decode,
            format!("network configuration is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(obj) = v else {
        return Err(CniError::new(
            Code::Decode,
            "network configuration must be a JSON object",
        ));
    };
    let name = get_str(&obj, "name")?.unwrap_or_default();
    if name.is_empty() {
        return Err(invalid("missing network name (key \"name\")".into()));
    }
    if !valid_name(name) {
        return Err(invalid(format!(
            "name {name:?}: invalid characters found in network name"
        )));
    }
    Ok(obj)
}

/// Stage two: `cniVersion`, as libcni's version decoder and reconciler read it (a non-string
/// does not decode: 6; a string that is not a supported version is incompatible: 1).
pub fn cni_version(obj: &Map<String, Value>) -> Result<(String, Version), CniError> {
    let cni_version = match obj.get("cniVersion") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(CniError::new(
                Code::Decode,
                format!("cniVersion must be a string, not {other}"),
            ));
        }
    };
    let parsed = version::check(&cni_version)?;
    Ok((cni_version, parsed))
}

/// Stage three: the plugin's own keys. `obj` has passed `decode`.
pub fn from_object(
    obj: Map<String, Value>,
    cni_version: String,
    parsed_version: Version,
) -> Result<NetConf, CniError> {
    let name = get_str(&obj, "name")?.unwrap_or_default().to_owned();
    let plugin_type = get_str(&obj, "type")?.unwrap_or_default().to_owned();
    if plugin_type.is_empty() {
        return Err(invalid("missing plugin type (key \"type\")".into()));
    }
    let daemon_socket = match get_str(&obj, "daemonSocket")? {
        Some(p) => {
            let path = absolute_path("daemonSocket", p)?;
            if p.len() > SUN_PATH_MAX {
                return Err(invalid(format!(
                    "daemonSocket {p:?} is longer than {SUN_PATH_MAX} bytes, the most a unix socket path can be"
                )));
            }
            path
        }
        None => PathBuf::from(sluice_api::DEFAULT_SOCKET),
    };
    let mtu = match obj.get("mtu") {
        None | Some(Value::Null) => None,
        Some(m) => match m.as_u64() {
            Some(n) if (576..=65535).contains(&n) => Some(n as u32),
            _ => {
                return Err(invalid(format!(
                    "mtu {m} must be an integer between 576 and 65535"
                )));
            }
        },
    };
    match obj.get("ipam") {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) if o.is_empty() => {}
        Some(ipam @ Value::Object(_)) => {
            return Err(CniError::new(
                Code::UnsupportedField,
                format!("ipam {ipam}: sluice allocates addresses itself; remove the ipam section"),
            ));
        }
        Some(other) => return Err(invalid(format!("ipam must be an object, not {other}"))),
    }
    let mut requested_ips = Vec::new();
    let mut requested_mac = None;
    // `null` reads as absent everywhere, as Go's encoding/json (libcni, the reference
    // plugins) reads it.
    if let Some(rc) = get_object(&obj, "runtimeConfig")? {
        if let Some(ips) = rc.get("ips").filter(|v| !v.is_null()) {
            requested_ips.extend(ip_list("runtimeConfig.ips", ips)?);
        }
        if let Some(mac) = get_str(rc, "mac").map_err(|e| prefixed("runtimeConfig", e))? {
            requested_mac = Some(usable_mac("runtimeConfig.mac", mac)?);
        }
    }
    if let Some(args) = get_object(&obj, "args")?
        && let Some(cni) = get_object(args, "cni").map_err(|e| prefixed("args", e))?
    {
        if let Some(ips) = cni.get("ips").filter(|v| !v.is_null()) {
            requested_ips.extend(ip_list("args.cni.ips", ips)?);
        }
        if let Some(mac) = get_str(cni, "mac").map_err(|e| prefixed("args.cni", e))? {
            requested_mac = Some(usable_mac("args.cni.mac", mac)?);
        }
    }
    let prev_result = match obj.get("prevResult") {
        None | Some(Value::Null) => None,
        Some(p @ Value::Object(_)) => Some(p.clone()),
        Some(other) => {
            return Err(CniError::new(
                Code::Decode,
                format!("prevResult must be an object, not {other}"),
            ));
        }
    };
    let present = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let valid_attachments = match (
        present("cni.dev/valid-attachments"),
        present("cni.dev/attachments"),
    ) {
        (Some(v), _) => Some(attachments("cni.dev/valid-attachments", v)?),
        (None, Some(v)) => Some(attachments("cni.dev/attachments", v)?),
        (None, None) => None,
    };
    let dns = get_object(&obj, "dns")?.map(|d| Value::Object(d.clone()));
    let log_file = match get_str(&obj, "logFile")? {
        Some(p) => Some(absolute_path("logFile", p)?),
        None => None,
    };
    Ok(NetConf {
        cni_version,
        version: parsed_version,
        name,
        plugin_type,
        daemon_socket,
        mtu,
        prev_result,
        requested_ips,
        requested_mac,
        dns,
        valid_attachments,
        log_file,
    })
}

/// The whole configuration: `decode`, `cni_version`, `from_object`.
pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
    let obj = decode(stdin)?;
    let (cni_version, parsed) = cni_version(&obj)?;
    from_object(obj, cni_version, parsed)
}

/// A MAC address for the CLI-style requests (`CNI_ARGS MAC=`).
pub fn parse_requested_mac(key: &str, s: &str) -> Result<[u8; 6], CniError> {
    usable_mac(key, s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<NetConf, CniError> {
        parse(s.as_bytes())
    }

    #[test]
    fn minimal_and_defaults() {
        let c = p(r#"{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"sluice"}"#).unwrap();
        assert_eq!(c.daemon_socket, PathBuf::from("/run/sluice/sluiced.sock"));
        assert_eq!(c.mtu, None);
        assert!(c.requested_ips.is_empty());
    }

    #[test]
    fn unknown_fields_are_tolerated() {
        assert!(p(r#"{"cniVersion":"1.1.0","name":"n","type":"sluice","frobnicate":{"x":1},"capabilities":{"ips":true}}"#).is_ok());
    }

    #[test]
    fn runtime_config_and_args() {
        let c = p(r#"{"cniVersion":"1.0.0","name":"n","type":"sluice","mtu":1400,
            "runtimeConfig":{"ips":["10.244.1.50/24","fd00::50"],"mac":"02:aa:bb:cc:dd:ee","portMappings":[]}}"#)
        .unwrap();
        assert_eq!(c.mtu, Some(1400));
        assert_eq!(c.requested_ips.len(), 2);
        assert_eq!(c.requested_mac, Some([2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]));
        let c = p(r#"{"cniVersion":"1.0.0","name":"n","type":"sluice","args":{"cni":{"ips":["10.1.1.1"]}}}"#)
            .unwrap();
        assert_eq!(c.requested_ips.len(), 1);
    }

    #[test]
    fn null_reads_as_absent() {
        let c = p(r#"{"cniVersion":"1.0.0","name":"n","type":"sluice","mtu":null,"ipam":null,"dns":null,
            "runtimeConfig":null,"args":{"cni":{"ips":null,"mac":null}},"logFile":null,"cni.dev/attachments":null}"#)
        .unwrap();
        assert_eq!(
            (c.mtu, c.dns, c.log_file, c.valid_attachments),
            (None, None, None, None)
        );
        assert!(c.requested_ips.is_empty() && c.requested_mac.is_none());
    }

    #[test]
    fn gc_attachments_both_keys() {
        let c = p(r#"{"cniVersion":"1.1.0","name":"n","type":"sluice","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#).unwrap();
        assert_eq!(c.valid_attachments.unwrap().len(), 1);
        let c = p(r#"{"cniVersion":"1.1.0","name":"n","type":"sluice","cni.dev/attachments":[]}"#).unwrap();
        assert_eq!(c.valid_attachments.unwrap().len(), 0);
    }

    #[test]
    fn daemon_socket_fits_a_socket_address() {
        let conf = |sock: &str| {
            format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"sluice","daemonSocket":"{sock}"}}"#)
        };
        let longest = format!("/{}", "s".repeat(SUN_PATH_MAX - 1));
        assert!(p(&conf(&longest)).is_ok());
        let e = p(&conf(&format!("{longest}s"))).unwrap_err();
        assert_eq!(e.code, Code::InvalidConfig);
        assert!(e.msg.contains("daemonSocket"));
        assert_eq!(p(&conf("/run/a\\u0000b")).unwrap_err().code, Code::InvalidConfig);
    }

    #[test]
    fn refusals_carry_code_and_key() {
        let cases: &[(&str, Code, &str)] = &[
            ("not json", Code::Decode, "JSON"),
            ("[1,2]", Code::Decode, "object"),
            (
                r#"{"cniVersion":"1.0.0","type":"sluice"}"#,
                Code::InvalidConfig,
                "name",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"bad name","type":"sluice"}"#,
                Code::InvalidConfig,
                "bad name",
            ),
            (
                r#"{"name":"n","type":"sluice"}"#,
                Code::IncompatibleVersion,
                "cniVersion",
            ),
            (
                r#"{"cniVersion":"9.9.9","name":"n","type":"sluice"}"#,
                Code::IncompatibleVersion,
                "9.9.9",
            ),
            (
                r#"{"cniVersion":1,"name":"n","type":"sluice"}"#,
                Code::Decode,
                "cniVersion",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n"}"#,
                Code::InvalidConfig,
                "type",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"sluice","mtu":"big"}"#,
                Code::InvalidConfig,
                "mtu",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"sluice","mtu":100}"#,
                Code::InvalidConfig,
                "mtu",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"sluice","daemonSocket":"rel/s"}"#,
                Code::InvalidConfig,
                "daemonSocket",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"sluice","daemonSocket":7}"#,
                Code::InvalidConfig,
                "daemonSocket",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"sluice","ipam":{"type":"host-local"}}"#,
                Code::UnsupportedField,
                "ipam",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"sluice","runtimeConfig":{"ips":["x"]}}"#,
                Code::InvalidConfig,
                "runtimeConfig.ips",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"sluice","runtimeConfig":{"mac":"01:00:00:00:00:01"}}"#,
                Code::InvalidConfig,
                "runtimeConfig.mac",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"sluice","prevResult":[]}"#,
                Code::Decode,
                "prevResult",
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"n","type":"sluice","cni.dev/valid-attachments":[{"x":1}]}"#,
                Code::InvalidConfig,
                "valid-attachments",
            ),
            (
                r#"{"cniVersion":"banana","name":"n","type":"sluice"}"#,
                Code::IncompatibleVersion,
                "banana",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"sluice","ipam":"host-local"}"#,
                Code::InvalidConfig,
                "ipam",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"sluice","runtimeConfig":{"ips":["10.0.0.1/33"]}}"#,
                Code::InvalidConfig,
                "10.0.0.1/33",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"sluice","runtimeConfig":{"mac":5}}"#,
                Code::InvalidConfig,
                "runtimeConfig.mac",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"sluice","args":{"cni":{"mac":5}}}"#,
                Code::InvalidConfig,
                "args.cni.mac",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"sluice","args":[]}"#,
                Code::InvalidConfig,
                "args",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"sluice","dns":"1.1.1.1"}"#,
                Code::InvalidConfig,
                "dns",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"sluice","logFile":"sluice.log"}"#,
                Code::InvalidConfig,
                "logFile",
            ),
        ];
        for (input, code, needle) in cases {
            let e = p(input).unwrap_err();
            assert_eq!(e.code, *code, "{input}: {e:?}");
            assert!(
                format!("{} {}", e.msg, e.details).contains(needle),
                "{input}: {e:?} lacks {needle}"
            );
        }
    }
}
