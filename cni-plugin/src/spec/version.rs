//! CNI specification versions.

use super::error::{CniError, Code};

/// What sluice reads and writes. podman 4.3 cannot use 1.1.0 conflists, so 1.0.0 matters as
/// much as 1.1.0; 0.3.x/0.4.0 results differ only in the `version` key of `ips`.
pub const SUPPORTED: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
pub const LATEST: &str = "1.1.0";

/// A parsed `major.minor.patch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.split('.');
        let v = Version(
            it.next()?.parse().ok()?,
            it.next()?.parse().ok()?,
            it.next()?.parse().ok()?,
        );
        it.next().is_none().then_some(v)
    }
}

/// Check a configuration's `cniVersion` (an absent one means 0.1.0, as in libcni). Like
/// libcni's reconciler, any string that is not one of `SUPPORTED` is an incompatible version
/// (1), whether it is `9.9.9` or `banana`: the runtime learns the same thing either way, and the
/// message and details name the version and the supported ones.
pub fn check(v: &str) -> Result<Version, CniError> {
    let supported = || format!("supported versions: {}", SUPPORTED.join(", "));
    if v.is_empty() {
        return Err(CniError::new(
            Code::IncompatibleVersion,
            "incompatible CNI versions: config has no cniVersion (0.1.0 assumed)",
        )
        .with_details(supported()));
    }
    if !SUPPORTED.contains(&v) {
        return Err(CniError::new(
            Code::IncompatibleVersion,
            format!("incompatible CNI versions: cniVersion {v:?} is not supported"),
        )
        .with_details(supported()));
    }
    Ok(Version::parse(v).expect("SUPPORTED holds x.y.z versions"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        assert!(Version::parse("1.0.0").unwrap() > Version::parse("0.4.0").unwrap());
        assert_eq!(Version::parse("1.0"), None);
        assert_eq!(Version::parse("1.0.0.1"), None);
        assert_eq!(Version::parse("x.0.0"), None);
    }

    #[test]
    fn check_codes() {
        assert_eq!(check("").unwrap_err().code, Code::IncompatibleVersion);
        assert_eq!(check("0.2.0").unwrap_err().code, Code::IncompatibleVersion);
        assert_eq!(check("2.0.0").unwrap_err().code, Code::IncompatibleVersion);
        assert_eq!(check("banana").unwrap_err().code, Code::IncompatibleVersion);
        assert_eq!(check(" 1.0.0").unwrap_err().code, Code::IncompatibleVersion);
        assert!(check("1.0.0").is_ok());
        assert!(check("0.4.0").is_ok());
    }
}
