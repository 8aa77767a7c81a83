//! Addresses as map keys.

/// An IPv4 or IPv6 address exactly as it appears on the wire (16 bytes, network byte order).
/// IPv4 addresses are IPv4-mapped: `::ffff:a.b.c.d`.
///
/// Stored as four `u32` words holding the raw wire bytes (not host-order integers), so the
/// eBPF side copies words straight from the packet and userspace converts with `from_ne_bytes`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct IpAddr128 {
    pub words: [u32; 4],
}

/// The wire bytes `00 00 ff ff` of an IPv4-mapped address's third word.
pub const V4_MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);
/// The prefix length, in the 128-bit space, of `::ffff:0:0/96`: add it to an IPv4 prefix length.
pub const V4_MAPPED_PREFIX_LEN: u32 = 96;

impl IpAddr128 {
    /// Maps a raw IPv4 address (the wire's 4 bytes read as one native-endian `u32`).
    #[inline(always)]
    pub const fn from_v4_raw(raw: u32) -> Self {
        Self {
            words: [0, 0, V4_MAPPED_WORD, raw],
        }
    }

    #[inline(always)]
    pub const fn is_v4(&self) -> bool {
        self.words[0] == 0 && self.words[1] == 0 && self.words[2] == V4_MAPPED_WORD
    }

    /// The raw IPv4 word (only meaningful when `is_v4`).
    #[inline(always)]
    pub const fn v4_raw(&self) -> u32 {
        self.words[3]
    }

    /// The address as 16 wire bytes (for LPM trie keys).
    #[inline(always)]
    pub fn to_bytes(&self) -> [u8; 16] {
        let w = self.words;
        let (a, b, c, d) = (
            w[0].to_ne_bytes(),
            w[1].to_ne_bytes(),
            w[2].to_ne_bytes(),
            w[3].to_ne_bytes(),
        );
        [
            a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2], d[3],
        ]
    }
}

/// Data part of an LPM trie key over addresses (the trie's `prefix_len` counts bits of these
/// 16 bytes; IPv4 prefixes are `96 + len` under `::ffff:0:0/96`).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct IpPrefixData {
    pub bytes: [u8; 16],
}
