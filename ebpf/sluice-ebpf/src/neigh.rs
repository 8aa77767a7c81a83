//! Neighbour resolution for pods without a bridge: the host-side program answers the pod's ARP
//! requests and IPv6 neighbour solicitations with the host veth's MAC, so the pod's gateway
//! (and anything else it looks for on its link) resolves to the host, whose program forwards.
//! Requests are turned into replies in place and sent back out of the same veth.

use aya_ebpf::{
    helpers::{bpf_csum_diff, bpf_redirect},
    programs::TcContext,
};
use sluice_common::endpoint::{EP_F_HAS_V4, EP_F_HAS_V6, LocalEndpoint};

use crate::{
    maps::ep_stats,
    packet::{ETH_HLEN, EthHdr, IPPROTO_ICMPV6, Ipv6Hdr, ptr_at},
};

#[repr(C)]
struct ArpEth {
    htype: [u8; 2],
    ptype: [u8; 2],
    hlen: u8,
    plen: u8,
    op: [u8; 2],
    sha: [u8; 6],
    spa: [u8; 4],
    tha: [u8; 6],
    tpa: [u8; 4],
}

/// Outcome of looking at an ARP packet from a pod.
pub enum ArpAction {
    /// Answered: return this tc verdict (a redirect back into the pod).
    Replied(i32),
    /// Not ours to answer (probe, gratuitous, reply): let the host stack see it.
    Pass,
    /// Sender MAC or IP is not the pod's.
    SpoofedMac,
    SpoofedIp,
}

#[inline(always)]
pub fn arp_from_pod(ctx: &TcContext, ep: &LocalEndpoint, ifindex: u32) -> Option<ArpAction> {
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    let arp: *mut ArpEth = ptr_at(ctx, ETH_HLEN)?;
    // SAFETY: both bounds checked by ptr_at; tc programs may write packet data directly.
    let (eth, arp) = unsafe { (&mut *eth, &mut *arp) };
    if arp.htype != [0, 1] || arp.ptype != [0x08, 0x00] || arp.hlen != 6 || arp.plen != 4 {
        return Some(ArpAction::Pass);
    }
    if arp.sha != ep.pod_mac {
        return Some(ArpAction::SpoofedMac);
    }
    let spa = u32::from_ne_bytes(arp.spa);
    if spa != 0 && (ep.flags & EP_F_HAS_V4 == 0 || spa != ep.ipv4) {
        return Some(ArpAction::SpoofedIp);
    }
    let tpa = u32::from_ne_bytes(arp.tpa);
    if arp.op != [0, 1] || spa == 0 || tpa == spa {
        return Some(ArpAction::Pass);
    }
    arp.op = [0, 2];
    arp.tha = arp.sha;
    arp.tpa = arp.spa;
    arp.sha = ep.host_mac;
    arp.spa = tpa.to_ne_bytes();
    eth.dst = ep.pod_mac;
    eth.src = ep.host_mac;
    if let Some(s) = ep_stats(ep.ep_id) {
        s.neigh_replies += 1;
    }
    // SAFETY: plain helper call; flags 0 = out of `ifindex` (towards the pod).
    Some(ArpAction::Replied(unsafe { bpf_redirect(ifindex, 0) } as i32))
}

/// fe80::/10
#[inline(always)]
pub fn is_link_local(first_word: u32) -> bool {
    let b = first_word.to_ne_bytes();
    b[0] == 0xfe && (b[1] & 0xc0) == 0x80
}

/// Answer a neighbour solicitation (ICMPv6 135) from the pod, unless it is duplicate address
/// detection (source `::`) or asks for the pod's own address. `None`: not answered.
#[inline(always)]
pub fn ns_from_pod(ctx: &TcContext, ep: &LocalEndpoint, ifindex: u32) -> Option<i32> {
    let ip: *mut Ipv6Hdr = ptr_at(ctx, ETH_HLEN)?;
    // SAFETY: bounds checked by ptr_at.
    let ip = unsafe { &mut *ip };
    if ip.next_hdr != IPPROTO_ICMPV6 || ip.hop_limit != 255 {
        return None;
    }
    let plen = u16::from_be(ip.payload_len) as usize;
    if plen != 24 && plen != 32 {
        return None;
    }
    if ip.src == [0; 4] {
        return None;
    }
    let icmp_off = ETH_HLEN + 40;
    let icmp: *mut [u8; 24] = ptr_at(ctx, icmp_off)?;
    // SAFETY: bounds checked by ptr_at.
    let icmp = unsafe { &mut *icmp };
    if icmp[0] != 135 || icmp[1] != 0 {
        return None;
    }
    let target = [
        u32::from_ne_bytes([icmp[8], icmp[9], icmp[10], icmp[11]]),
        u32::from_ne_bytes([icmp[12], icmp[13], icmp[14], icmp[15]]),
        u32::from_ne_bytes([icmp[16], icmp[17], icmp[18], icmp[19]]),
        u32::from_ne_bytes([icmp[20], icmp[21], icmp[22], icmp[23]]),
    ];
    if ep.flags & EP_F_HAS_V6 != 0 && target == ep.ipv6.words {
        return None;
    }
    if plen == 32 {
        let opt: *mut [u8; 8] = ptr_at(ctx, icmp_off + 24)?;
        // SAFETY: bounds checked by ptr_at.
        let opt = unsafe { &mut *opt };
        if opt[0] != 1 || opt[1] != 1 {
            return None;
        }
        // Source link-layer address option becomes the target link-layer address option.
        opt[0] = 2;
        opt[2..8].copy_from_slice(&ep.host_mac);
    }
    // Neighbour advertisement: Router | Solicited | Override.
    icmp[0] = 136;
    icmp[2] = 0;
    icmp[3] = 0;
    icmp[4] = 0xe0;
    icmp[5] = 0;
    icmp[6] = 0;
    icmp[7] = 0;
    ip.dst = ip.src;
    ip.src = target;
    ip.hop_limit = 255;
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: bounds checked by ptr_at.
    let eth = unsafe { &mut *eth };
    eth.dst = ep.pod_mac;
    eth.src = ep.host_mac;

    // ICMPv6 checksum over the pseudo-header (addresses, length, next header) and the message.
    let addrs: *mut [u8; 32] = ptr_at(ctx, ETH_HLEN + 8)?;
    let msg_len = if plen == 32 { 32 } else { 24 };
    let msg: *mut [u8; 32] = if plen == 32 {
        ptr_at(ctx, icmp_off)?
    } else {
        // 24-byte message: checksum its first 24 bytes only (bounds already proven above).
        ptr_at::<[u8; 24]>(ctx, icmp_off)? as *mut [u8; 32]
    };
    let tail: [u32; 2] = [(plen as u32).to_be(), (IPPROTO_ICMPV6 as u32).to_be()];
    // SAFETY: helper reads `size` bytes from each pointer, all bounds-checked or on the stack.
    let sum = unsafe {
        let s = bpf_csum_diff(core::ptr::null_mut(), 0, addrs as *mut u32, 32, 0);
        let s = bpf_csum_diff(core::ptr::null_mut(), 0, msg as *mut u32, msg_len, s as u32);
        bpf_csum_diff(core::ptr::null_mut(), 0, tail.as_ptr() as *mut u32, 8, s as u32)
    };
    if sum < 0 {
        return None;
    }
    let mut s = sum as u64;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    let csum = !(s as u16);
    let icmp: *mut [u8; 4] = ptr_at(ctx, icmp_off)?;
    // SAFETY: bounds checked by ptr_at.
    let icmp = unsafe { &mut *icmp };
    let c = csum.to_ne_bytes();
    icmp[2] = c[0];
    icmp[3] = c[1];
    if let Some(s) = ep_stats(ep.ep_id) {
        s.neigh_replies += 1;
    }
    // SAFETY: plain helper call; flags 0 = out of `ifindex` (towards the pod).
    Some(unsafe { bpf_redirect(ifindex, 0) } as i32)
}
