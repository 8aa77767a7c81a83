//! Bounds-checked header access and the parse of one packet into the fields the datapath
//! decides on. Every read goes through `ptr_at`, which proves to the verifier that the bytes
//! lie between `data` and `data_end`.

use aya_ebpf::programs::TcContext;
use sluice_common::ip::IpAddr128;

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_ARP: u16 = 0x0806;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_SCTP: u8 = 132;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;

/// A pointer to a `T` at `off` bytes into the packet, or `None` if it would cross `data_end`.
#[inline(always)]
pub fn ptr_at<T>(ctx: &TcContext, off: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *mut T)
}

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub proto: u16,
}

#[repr(C)]
pub struct Ipv4Hdr {
    pub vihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub proto: u8,
    pub check: u16,
    pub src: u32,
    pub dst: u32,
}

#[repr(C)]
pub struct Ipv6Hdr {
    pub vtcfl: u32,
    pub payload_len: u16,
    pub next_hdr: u8,
    pub hop_limit: u8,
    pub src: [u32; 4],
    pub dst: [u32; 4],
}

/// The fields of the transport header that matter to conntrack and policy.
#[repr(C)]
pub struct L4Ports {
    pub sport: u16,
    pub dport: u16,
}

/// Fragment state of the packet.
pub const FRAG_NONE: u8 = 0;
/// First fragment: it carries the transport header.
pub const FRAG_FIRST: u8 = 1;
/// A later fragment: no transport header.
pub const FRAG_LATER: u8 = 2;

/// One parsed IP packet.
pub struct Packet {
    /// 4 or 6.
    pub family: u8,
    pub src: IpAddr128,
    pub dst: IpAddr128,
    /// Transport protocol (after IPv6 extension headers).
    pub proto: u8,
    /// Offset of the transport header.
    pub l4_off: usize,
    /// Ports in network byte order (ICMP echo: see `icmp_echo_ports`).
    pub sport: u16,
    pub dport: u16,
    /// TCP flags byte (TCP only).
    pub tcp_flags: u8,
    /// ICMP/ICMPv6 type and code.
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub frag: u8,
}

/// Parse the IP header at `ETH_HLEN` (the EtherType was already read) and the transport ports.
/// `None`: truncated or not IP.
#[inline(always)]
pub fn parse_ip(ctx: &TcContext, ethertype: u16) -> Option<Packet> {
    let mut p = Packet {
        family: 0,
        src: IpAddr128::default(),
        dst: IpAddr128::default(),
        proto: 0,
        l4_off: 0,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        icmp_type: 0,
        icmp_code: 0,
        frag: FRAG_NONE,
    };
    if ethertype == ETH_P_IP {
        let ip: *const Ipv4Hdr = ptr_at(ctx, ETH_HLEN)?;
        // SAFETY: bounds checked by ptr_at.
        let ip = unsafe { &*ip };
        let ihl = ((ip.vihl & 0x0f) as usize) * 4;
        if ihl < 20 {
            return None;
        }
        p.family = 4;
        p.src = IpAddr128::from_v4_raw(ip.src);
        p.dst = IpAddr128::from_v4_raw(ip.dst);
        p.proto = ip.proto;
        p.l4_off = ETH_HLEN + ihl;
        let frag = u16::from_be(ip.frag_off);
        if frag & 0x1fff != 0 {
            p.frag = FRAG_LATER;
        } else if frag & 0x2000 != 0 {
            p.frag = FRAG_FIRST;
        }
    } else if ethertype == ETH_P_IPV6 {
        let ip: *const Ipv6Hdr = ptr_at(ctx, ETH_HLEN)?;
        // SAFETY: bounds checked by ptr_at.
        let ip = unsafe { &*ip };
        p.family = 6;
        p.src = IpAddr128 { words: ip.src };
        p.dst = IpAddr128 { words: ip.dst };
        let mut next = ip.next_hdr;
        let mut off = ETH_HLEN + 40;
        // Skip up to four extension headers (hop-by-hop, routing, fragment, destination options).
        let mut i = 0;
        while i < 4 {
            match next {
                0 | 43 | 60 => {
                    let h: *const [u8; 2] = ptr_at(ctx, off)?;
                    // SAFETY: bounds checked by ptr_at.
                    let h = unsafe { &*h };
                    next = h[0];
                    off += (h[1] as usize + 1) * 8;
                }
                44 => {
                    let h: *const [u8; 8] = ptr_at(ctx, off)?;
                    // SAFETY: bounds checked by ptr_at.
                    let h = unsafe { &*h };
                    next = h[0];
                    let offset_flags = u16::from_be_bytes([h[2], h[3]]);
                    if offset_flags & 0xfff8 != 0 {
                        p.frag = FRAG_LATER;
                    } else if offset_flags & 1 != 0 {
                        p.frag = FRAG_FIRST;
                    }
                    off += 8;
                }
                _ => break,
            }
            i += 1;
        }
        p.proto = next;
        p.l4_off = off;
    } else {
        return None;
    }
    if p.frag == FRAG_LATER {
        return Some(p);
    }
    match p.proto {
        IPPROTO_TCP => {
            let h: *const [u8; 14] = ptr_at(ctx, p.l4_off)?;
            // SAFETY: bounds checked by ptr_at.
            let h = unsafe { &*h };
            p.sport = u16::from_ne_bytes([h[0], h[1]]);
            p.dport = u16::from_ne_bytes([h[2], h[3]]);
            p.tcp_flags = h[13];
        }
        IPPROTO_UDP | IPPROTO_SCTP => {
            let h: *const L4Ports = ptr_at(ctx, p.l4_off)?;
            // SAFETY: bounds checked by ptr_at.
            let h = unsafe { &*h };
            p.sport = h.sport;
            p.dport = h.dport;
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let h: *const [u8; 8] = ptr_at(ctx, p.l4_off)?;
            // SAFETY: bounds checked by ptr_at.
            let h = unsafe { &*h };
            p.icmp_type = h[0];
            p.icmp_code = h[1];
            let id = u16::from_ne_bytes([h[4], h[5]]);
            match (p.proto, p.icmp_type) {
                // Echo request: the identifier plays the source port ...
                (IPPROTO_ICMP, 8) | (IPPROTO_ICMPV6, 128) => p.sport = id,
                // ... and in the reply the destination port, so that a reply's tuple is the
                // request's reversed.
                (IPPROTO_ICMP, 0) | (IPPROTO_ICMPV6, 129) => p.dport = id,
                _ => {}
            }
        }
        _ => {}
    }
    Some(p)
}

impl Packet {
    /// An ICMP error that quotes a packet of some flow (destination unreachable, time
    /// exceeded, parameter problem; ICMPv6 also packet too big).
    #[inline(always)]
    pub fn is_icmp_error(&self) -> bool {
        match self.proto {
            IPPROTO_ICMP => matches!(self.icmp_type, 3 | 11 | 12),
            IPPROTO_ICMPV6 => matches!(self.icmp_type, 1..=4),
            _ => false,
        }
    }
}

/// The 5-tuple quoted inside an ICMP error (the packet that caused it), as it was sent.
/// Only TCP, UDP and SCTP quotes are understood.
#[inline(always)]
pub fn parse_icmp_quote(ctx: &TcContext, p: &Packet) -> Option<(IpAddr128, IpAddr128, u8, u16, u16)> {
    let inner = p.l4_off + 8;
    let (src, dst, proto, l4) = if p.family == 4 {
        let ip: *const Ipv4Hdr = ptr_at(ctx, inner)?;
        // SAFETY: bounds checked by ptr_at.
        let ip = unsafe { &*ip };
        let ihl = ((ip.vihl & 0x0f) as usize) * 4;
        if ihl < 20 {
            return None;
        }
        (
            IpAddr128::from_v4_raw(ip.src),
            IpAddr128::from_v4_raw(ip.dst),
            ip.proto,
            inner + ihl,
        )
    } else {
        let ip: *const Ipv6Hdr = ptr_at(ctx, inner)?;
        // SAFETY: bounds checked by ptr_at.
        let ip = unsafe { &*ip };
        (
            IpAddr128 { words: ip.src },
            IpAddr128 { words: ip.dst },
            ip.next_hdr,
            inner + 40,
        )
    };
    if !matches!(proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP) {
        return None;
    }
    let ports: *const L4Ports = ptr_at(ctx, l4)?;
    // SAFETY: bounds checked by ptr_at.
    let ports = unsafe { &*ports };
    Some((src, dst, proto, ports.sport, ports.dport))
}
