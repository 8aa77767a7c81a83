//! CNI results: what ADD prints and what later calls get back as `prevResult`. Written in the
//! version the configuration asks for; read in any supported version.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde_json::{Value, json};

use super::{
    error::{CniError, Code},
    version::Version,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside the container; empty for host-side interfaces.
    pub sandbox: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpConfig {
    pub address: IpNetwork,
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    pub interface: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNetwork,
    pub gw: Option<IpAddr>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct CniOutcome {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Option<Value>,
}

fn decode(msg: String) -> CniError {
    CniError::new(Code::Decode, msg)
}

/// `prevResult.<key>`: a list, or nothing when absent or `null`.
fn list<'a>(v: &'a Value, key: &str) -> Result<&'a [Value], CniError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(decode(format!("prevResult.{key} must be a list"))),
    }
}

/// A string field of an entry of `prevResult.<list>`: absent or `null` is `None`.
fn opt_str<'a>(entry: &'a Value, list: &str, key: &str) -> Result<Option<&'a str>, CniError> {
    match entry.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(decode(format!(
            "prevResult.{list}: {key} {other} is not a string"
        ))),
    }
}

impl CniOutcome {
    /// The result JSON for `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let v = Version::parse(cni_version).unwrap_or(Version(1, 1, 0));
        let with_ip_version = v < Version(1, 0, 0);
        let with_mtu = v >= Version(1, 1, 0);
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut o = json!({"name": i.name, "mac": i.mac});
                if !i.sandbox.is_empty() {
                    o["sandbox"] = json!(i.sandbox);
                }
                if let (true, Some(m)) = (with_mtu, i.mtu) {
                    o["mtu"] = json!(m);
                }
                o
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut o = json!({"address": ip.address.to_string()});
                if with_ip_version {
                    o["version"] = json!(if ip.address.is_ipv4() { "4" } else { "6" });
                }
                if let Some(g) = ip.gateway {
                    o["gateway"] = json!(g.to_string());
                }
                if let Some(i) = ip.interface {
                    o["interface"] = json!(i);
                }
                o
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let mut o = json!({"dst": r.dst.to_string()});
                if let Some(g) = r.gw {
                    o["gw"] = json!(g.to_string());
                }
                o
            })
            .collect();
        let mut out = json!({
            "cniVersion": cni_version,
            "interfaces": interfaces,
            "ips": ips,
            "routes": routes,
        });
        out["dns"] = self.dns.clone().unwrap_or_else(|| json!({}));
        out
    }

    /// Read a result of any supported version (a `prevResult`). Keys may be absent or `null`
    /// (as Go's encoding/json, which wrote it, reads them); a key that is present must have the
    /// spec's type and a valid value: a result that CHECK compares with the live state must not
    /// be read as something it does not say (a gateway dropped, an MTU truncated).
    pub fn from_json(v: &Value) -> Result<Self, CniError> {
        let mut out = CniOutcome::default();
        for i in list(v, "interfaces")? {
            if !i.is_object() {
                return Err(decode(format!("prevResult.interfaces: {i} is not an object")));
            }
            let text =
                |k: &str| Ok::<_, CniError>(opt_str(i, "interfaces", k)?.unwrap_or_default().to_owned());
            out.interfaces.push(Interface {
                name: text("name")?,
                mac: text("mac")?,
                mtu: match i.get("mtu") {
                    None | Some(Value::Null) => None,
                    Some(m) => Some(
                        m.as_u64()
                            .and_then(|m| u32::try_from(m).ok())
                            .ok_or_else(|| decode(format!("prevResult.interfaces: mtu {m} is not an MTU")))?,
                    ),
                },
                sandbox: text("sandbox")?,
            });
        }
        for ip in list(v, "ips")? {
            let addr = opt_str(ip, "ips", "address")?
                .ok_or_else(|| decode(format!("prevResult.ips: {ip} has no address")))?;
            let address: IpNetwork = addr
                .parse()
                .map_err(|_| decode(format!("prevResult.ips: {addr:?} is not an address/prefix")))?;
            let gateway = match opt_str(ip, "ips", "gateway")? {
                Some(g) => Some(
                    g.parse()
                        .map_err(|_| decode(format!("prevResult.ips: gateway {g:?} is not an address")))?,
                ),
                None => None,
            };
            let interface = match ip.get("interface") {
                None | Some(Value::Null) => None,
                Some(n) => Some(
                    n.as_u64()
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or_else(|| decode(format!("prevResult.ips: interface {n} is not an index")))?,
                ),
            };
            out.ips.push(IpConfig {
                address,
                gateway,
                interface,
            });
        }
        for r in list(v, "routes")? {
            let dst = opt_str(r, "routes", "dst")?
                .and_then(|d| d.parse().ok())
                .ok_or_else(|| decode(format!("prevResult.routes: {r} has no valid dst")))?;
            let gw = match opt_str(r, "routes", "gw")? {
                Some(g) => Some(
                    g.parse()
                        .map_err(|_| decode(format!("prevResult.routes: gw {g:?} is not an address")))?,
                ),
                None => None,
            };
            out.routes.push(Route { dst, gw });
        }
        out.dns = v.get("dns").cloned().filter(|d| d.is_object());
        Ok(out)
    }

    /// Append `other` (this plugin's outcome) after a previous plugin's, renumbering the
    /// interface indexes of `other`'s addresses.
    pub fn chain(mut self, other: CniOutcome) -> CniOutcome {
        let base = self.interfaces.len();
        self.interfaces.extend(other.interfaces);
        self.ips.extend(other.ips.into_iter().map(|mut ip| {
            ip.interface = ip.interface.map(|i| i + base);
            ip
        }));
        self.routes.extend(other.routes);
        if other.dns.is_some() {
            self.dns = other.dns;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniOutcome {
        CniOutcome {
            interfaces: vec![
                Interface {
                    name: "slabc".into(),
                    mac: "02:00:00:00:00:01".into(),
                    mtu: Some(1500),
                    sandbox: String::new(),
                },
                Interface {
                    name: "eth0".into(),
                    mac: "02:00:00:00:00:02".into(),
                    mtu: Some(1500),
                    sandbox: "/run/netns/p".into(),
                },
            ],
            ips: vec![IpConfig {
                address: "10.244.1.5/32".parse().unwrap(),
                gateway: Some("10.244.1.1".parse().unwrap()),
                interface: Some(1),
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("10.244.1.1".parse().unwrap()),
            }],
            dns: None,
        }
    }

    #[test]
    fn version_specific_shapes() {
        let r = sample();
        let v04 = r.to_json("0.4.0");
        assert_eq!(v04["ips"][0]["version"], "4");
        assert!(v04["interfaces"][1].get("mtu").is_none());
        let v10 = r.to_json("1.0.0");
        assert!(v10["ips"][0].get("version").is_none());
        assert!(v10["interfaces"][1].get("mtu").is_none());
        let v11 = r.to_json("1.1.0");
        assert_eq!(v11["interfaces"][1]["mtu"], 1500);
        assert_eq!(v11["interfaces"][1]["sandbox"], "/run/netns/p");
        assert!(v11["interfaces"][0].get("sandbox").is_none());
        assert_eq!(v11["cniVersion"], "1.1.0");
    }

    #[test]
    fn round_trips_through_prev_result() {
        let r = sample();
        for v in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
            let back = CniOutcome::from_json(&r.to_json(v)).unwrap();
            assert_eq!(back.ips, r.ips);
            assert_eq!(back.routes, r.routes);
            assert_eq!(back.interfaces.len(), 2);
        }
    }

    #[test]
    fn chaining_renumbers_interfaces() {
        let prev = sample();
        let ours = sample();
        let c = prev.chain(ours);
        assert_eq!(c.interfaces.len(), 4);
        assert_eq!(c.ips[1].interface, Some(3));
    }

    #[test]
    fn null_reads_as_absent() {
        let r = CniOutcome::from_json(
            &json!({"interfaces": null, "ips": null, "routes": [{"dst": "::/0", "gw": null}]}),
        )
        .unwrap();
        assert!(r.interfaces.is_empty() && r.ips.is_empty());
        assert_eq!(r.routes[0].gw, None);
    }

    #[test]
    fn malformed_prev_results() {
        for bad in [
            json!({"ips": "x"}),
            json!({"ips": [{"gateway": "1.1.1.1"}]}),
            json!({"ips": [{"address": "nope"}]}),
            json!({"routes": [{"gw": "1.1.1.1"}]}),
            json!({"routes": [{"dst": "0.0.0.0/0", "gw": "gw"}]}),
            json!({"ips": [{"address": "10.0.0.1/32", "gateway": 7}]}),
            json!({"ips": [{"address": "10.0.0.1/32", "interface": -1}]}),
            json!({"interfaces": [{"name": "eth0", "mtu": 4294968796u64}]}),
            json!({"interfaces": ["eth0"]}),
        ] {
            assert_eq!(
                CniOutcome::from_json(&bad).unwrap_err().code,
                Code::Decode,
                "{bad}"
            );
        }
    }
}
