//! `CNI_ARGS`: `KEY=VALUE` pairs separated by `;`. Kubernetes runtimes send
//! `IgnoreUnknown=1;K8S_POD_NAMESPACE=..;K8S_POD_NAME=..;K8S_POD_INFRA_CONTAINER_ID=..` in any
//! order; podman sends `IP=` and `MAC=`. Unknown keys are tolerated (with or without
//! `IgnoreUnknown`): a runtime may always add keys another plugin in the chain wants.

use std::net::IpAddr;

use super::{
    config::parse_ip_request,
    error::{CniError, Code},
};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub ignore_unknown: bool,
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    pub pod_infra_container_id: Option<String>,
    pub pod_uid: Option<String>,
    /// `IP=` (comma-separated for several).
    pub ips: Vec<IpAddr>,
    /// `MAC=`.
    pub mac: Option<String>,
    /// Keys sluice does not know, kept for the log.
    pub unknown: Vec<String>,
}

pub fn parse(s: &str) -> Result<CniArgs, CniError> {
    let mut a = CniArgs::default();
    for pair in s.split(';').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(CniError::new(
                Code::InvalidEnv,
                format!("CNI_ARGS: {pair:?} is not a KEY=VALUE pair"),
            ));
        };
        match k {
            "IgnoreUnknown" => a.ignore_unknown = matches!(v.to_ascii_lowercase().as_str(), "1" | "true"),
            "K8S_POD_NAMESPACE" => a.pod_namespace = Some(v.to_owned()).filter(|v| !v.is_empty()),
            "K8S_POD_NAME" => a.pod_name = Some(v.to_owned()).filter(|v| !v.is_empty()),
            "K8S_POD_INFRA_CONTAINER_ID" => a.pod_infra_container_id = Some(v.to_owned()),
            "K8S_POD_UID" => a.pod_uid = Some(v.to_owned()),
            "IP" => {
                for ip in v.split(',').filter(|x| !x.is_empty()) {
                    // podman may pass `IP=10.0.0.5` or a CIDR: keep the address.
                    a.ips.push(parse_ip_request(ip).ok_or_else(|| {
                        CniError::new(
                            Code::InvalidEnv,
                            format!("CNI_ARGS: IP={ip:?} is not an IP address"),
                        )
                    })?);
                }
            }
            "MAC" => a.mac = Some(v.to_owned()),
            other => a.unknown.push(other.to_owned()),
        }
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_style() {
        let a = parse("K8S_POD_NAME=web-1;IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u")
            .unwrap();
        assert!(a.ignore_unknown);
        assert_eq!(a.pod_namespace.as_deref(), Some("prod"));
        assert_eq!(a.pod_name.as_deref(), Some("web-1"));
        assert!(a.unknown.is_empty());
    }

    #[test]
    fn podman_style_and_unknown_keys() {
        let a = parse("IP=10.88.0.7;MAC=02:00:00:00:00:01;FOO=bar").unwrap();
        assert_eq!(a.ips, vec!["10.88.0.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(a.mac.as_deref(), Some("02:00:00:00:00:01"));
        assert_eq!(a.unknown, vec!["FOO"]);
        assert_eq!(parse("IP=10.0.0.1,fd00::5").unwrap().ips.len(), 2);
    }

    #[test]
    fn empty_values_and_segments() {
        assert_eq!(parse("").unwrap(), CniArgs::default());
        assert_eq!(parse(";;").unwrap(), CniArgs::default());
        assert_eq!(parse("K8S_POD_NAME=").unwrap().pod_name, None);
        // A value may contain '='.
        assert_eq!(parse("X=a=b").unwrap().unknown, vec!["X"]);
    }

    #[test]
    fn refusals_name_the_offender() {
        let e = parse("K8S_POD_NAME").unwrap_err();
        assert_eq!(e.code, Code::InvalidEnv);
        assert!(e.msg.contains("K8S_POD_NAME"));
        let e = parse("IP=300.1.1.1").unwrap_err();
        assert!(e.msg.contains("300.1.1.1"));
        // A prefix must be a prefix, even though only the address is used.
        assert!(parse("IP=10.0.0.1/24").is_ok());
        for bad in ["10.0.0.1/33", "10.0.0.1/x", "10.0.0.1/", "10.0.0.1/24/1"] {
            let e = parse(&format!("IP={bad}")).unwrap_err();
            assert!(e.msg.contains(bad), "{e:?}");
        }
    }
}
