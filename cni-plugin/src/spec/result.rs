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

    /// Read a result of any supported version (a `prevResult`).
    pub fn from_json(v: &Value) -> Result<Self, CniError> {
        let mut out = CniOutcome::default();
        if let Some(ifs) = v.get("interfaces") {
            for i in ifs
                .as_array()
                .ok_or_else(|| decode("prevResult.interfaces must be a list".into()))?
            {
                out.interfaces.push(Interface {
                    name: i
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    mac: i
                        .get("mac")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    mtu: i.get("mtu").and_then(Value::as_u64).map(|m| m as u32),
                    sandbox: i
                        .get("sandbox")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                });
            }
        }
        if let Some(ips) = v.get("ips") {
            for ip in ips
                .as_array()
                .ok_or_else(|| decode("prevResult.ips must be a list".into()))?
            {
                let addr = ip
                    .get("address")
                    .and_then(Value::as_str)
                    .ok_or_else(|| decode(format!("prevResult.ips: {ip} has no address")))?;
                let address: IpNetwork = addr
                    .parse()
                    .map_err(|_| decode(format!("prevResult.ips: {addr:?} is not an address/prefix")))?;
                let gateway =
                    match ip.get("gateway").and_then(Value::as_str) {
                        Some(g) => Some(g.parse().map_err(|_| {
                            decode(format!("prevResult.ips: gateway {g:?} is not an address"))
                        })?),
                        None => None,
                    };
                out.ips.push(IpConfig {
                    address,
                    gateway,
                    interface: ip.get("interface").and_then(Value::as_u64).map(|i| i as usize),
                });
            }
        }
        if let Some(routes) = v.get("routes") {
            for r in routes
                .as_array()
                .ok_or_else(|| decode("prevResult.routes must be a list".into()))?
            {
                let dst = r
                    .get("dst")
                    .and_then(Value::as_str)
                    .and_then(|d| d.parse().ok())
                    .ok_or_else(|| decode(format!("prevResult.routes: {r} has no valid dst")))?;
                let gw = r.get("gw").and_then(Value::as_str).and_then(|g| g.parse().ok());
                out.routes.push(Route { dst, gw });
            }
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
    fn malformed_prev_results() {
        for bad in [
            json!({"ips": "x"}),
            json!({"ips": [{"gateway": "1.1.1.1"}]}),
            json!({"ips": [{"address": "nope"}]}),
            json!({"routes": [{"gw": "1.1.1.1"}]}),
        ] {
            assert_eq!(
                CniOutcome::from_json(&bad).unwrap_err().code,
                Code::Decode,
                "{bad}"
            );
        }
    }
}
