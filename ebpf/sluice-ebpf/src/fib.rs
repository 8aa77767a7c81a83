//! Native routing's fast path: a pod's packet to a pod on another node leaves through the
//! uplink straight from `from_pod`, without a pass through this node's IP stack. The kernel's
//! FIB (the routes sluiced programmed to the other nodes' pod CIDRs) chooses the device and
//! next hop; a resolved neighbour gives the MACs and `bpf_redirect` sends, an unresolved one
//! is left to `bpf_redirect_neigh`, which resolves it as the stack would. Whatever the FIB
//! cannot forward as is (fragmentation needed, no route, forwarding off, TTL expiring) goes to
//! the stack, which answers it properly (ICMP errors).

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams, bpf_redir_neigh,
    },
    helpers::{bpf_fib_lookup, bpf_redirect, bpf_redirect_neigh},
    programs::TcContext,
};

use crate::{
    forward::decrement_ttl,
    packet::{ETH_HLEN, EthHdr, Ipv4Hdr, Ipv6Hdr, Packet, ptr_at},
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// `Some(verdict)` when the program sent the packet, `None` to leave it to the stack.
#[inline(always)]
pub fn to_remote_node(ctx: &TcContext, pkt: &Packet, ifindex: u32) -> Option<i32> {
    // SAFETY: plain old data, all-zero is valid.
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    p.ifindex = ifindex;
    p.l4_protocol = pkt.proto;
    p.sport = pkt.sport;
    p.dport = pkt.dport;
    // tot_len stays 0: the kernel then checks the skb itself against the MTU, segmentation
    // offload included (a TSO super-packet from the pod is forwardable, its length is not).
    if pkt.family == 4 {
        let ip: *const Ipv4Hdr = ptr_at(ctx, ETH_HLEN)?;
        // SAFETY: bounds checked by ptr_at.
        let ip = unsafe { &*ip };
        p.family = AF_INET;
        p.__bindgen_anon_2.tos = ip.tos;
        p.__bindgen_anon_3.ipv4_src = ip.src;
        p.__bindgen_anon_4.ipv4_dst = ip.dst;
    } else {
        let ip: *const Ipv6Hdr = ptr_at(ctx, ETH_HLEN)?;
        // SAFETY: bounds checked by ptr_at.
        let ip = unsafe { &*ip };
        p.family = AF_INET6;
        // Flow label and traffic class, as the stack's route lookup sees them.
        p.__bindgen_anon_2.flowinfo = ip.vtcfl & 0x0fff_ffffu32.to_be();
        p.__bindgen_anon_3.ipv6_src = ip.src;
        p.__bindgen_anon_4.ipv6_dst = ip.dst;
    }
    // SAFETY: valid context and parameters of the helper's size.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.skb.skb as *mut _,
            &mut p,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    } as u32;
    if rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH {
        return None;
    }
    if !decrement_ttl(ctx, pkt.family)? {
        return None;
    }
    if rc == BPF_FIB_LKUP_RET_SUCCESS {
        let eth: *mut EthHdr = ptr_at(ctx, 0)?;
        // SAFETY: bounds checked by ptr_at.
        unsafe {
            (*eth).src = p.smac;
            (*eth).dst = p.dmac;
        }
        // SAFETY: plain helper call; flags 0 = out of that device.
        return Some(unsafe { bpf_redirect(p.ifindex, 0) } as i32);
    }
    // The lookup wrote the next hop (the gateway, or the destination when on-link) into the
    // destination fields.
    // SAFETY: plain old data, all-zero is valid.
    let mut nh: bpf_redir_neigh = unsafe { core::mem::zeroed() };
    // SAFETY: reading the union member the lookup wrote for this family.
    unsafe {
        if pkt.family == 4 {
            nh.nh_family = AF_INET as u32;
            nh.__bindgen_anon_1.ipv4_nh = p.__bindgen_anon_4.ipv4_dst;
        } else {
            nh.nh_family = AF_INET6 as u32;
            nh.__bindgen_anon_1.ipv6_nh = p.__bindgen_anon_4.ipv6_dst;
        }
    }
    // SAFETY: valid next-hop parameters of the helper's size.
    Some(unsafe {
        bpf_redirect_neigh(
            p.ifindex,
            &mut nh,
            core::mem::size_of::<bpf_redir_neigh>() as i32,
            0,
        )
    } as i32)
}
