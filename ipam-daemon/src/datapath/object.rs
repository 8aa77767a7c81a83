//! The eBPF object built by `build.rs`, embedded in the daemon binary.

/// The compiled programs and map definitions (ELF, BTF inside).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sluice-ebpf.o"));

/// A stable fingerprint of the embedded object: a daemon whose object differs from the one
/// that loaded the pinned programs replaces them (atomically, link by link).
pub fn fingerprint() -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(OBJECT);
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every map and program name the ABI crate spells must exist in the object: the names
    /// are typed once (in `sluice_common`) and checked here against what the eBPF side defines.
    #[test]
    fn object_defines_every_abi_name() {
        let obj = aya_obj::Object::parse(OBJECT).expect("parse embedded object");
        for name in sluice_common::maps::PINNED {
            assert!(
                obj.maps.contains_key(name),
                "map {name} missing from the eBPF object"
            );
        }
        for name in sluice_common::programs::ALL {
            assert!(
                obj.programs.contains_key(name),
                "program {name} missing from the eBPF object"
            );
        }
    }
}
