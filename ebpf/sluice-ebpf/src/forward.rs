//! Delivery of a pod's packet straight into a local pod: rewrite the Ethernet header as a
//! router would (the destination pod's MAC, its gateway's MAC as source), decrement TTL/hop
//! limit, and hand the skb to the peer of the destination's host veth with
//! `bpf_redirect_peer` (it enters the pod's netns without a second pass through the host).

use aya_ebpf::{bindings::TC_ACT_UNSPEC, helpers::bpf_redirect_peer, programs::TcContext};
use sluice_common::endpoint::LocalEndpoint;

use crate::packet::{ETH_HLEN, EthHdr, Ipv4Hdr, Ipv6Hdr, ptr_at};

pub enum Forward {
    /// Redirected: return this tc verdict.
    Done(i32),
    /// TTL would expire: let the host stack answer with ICMP time exceeded.
    ToHost,
    /// The redirect helper failed.
    Failed,
}

/// Decrement the TTL (IPv4, fixing the header checksum) or hop limit (IPv6) as a router
/// does. `Some(false)`: it would expire, leave the packet to the host stack (it answers with
/// ICMP time exceeded).
#[inline(always)]
pub fn decrement_ttl(ctx: &TcContext, family: u8) -> Option<bool> {
    if family == 4 {
        let ip: *mut Ipv4Hdr = ptr_at(ctx, ETH_HLEN)?;
        // SAFETY: bounds checked by ptr_at.
        let ip = unsafe { &mut *ip };
        if ip.ttl <= 1 {
            return Some(false);
        }
        // Incremental checksum for a TTL decrement (the kernel's ip_decrease_ttl).
        let mut check = ip.check as u32;
        check += 0x0100u16.to_be() as u32;
        ip.check = (check + (check >= 0xffff) as u32) as u16;
        ip.ttl -= 1;
    } else {
        let ip: *mut Ipv6Hdr = ptr_at(ctx, ETH_HLEN)?;
        // SAFETY: bounds checked by ptr_at.
        let ip = unsafe { &mut *ip };
        if ip.hop_limit <= 1 {
            return Some(false);
        }
        ip.hop_limit -= 1;
    }
    Some(true)
}

#[inline(always)]
pub fn to_local_pod(ctx: &TcContext, family: u8, dst: &LocalEndpoint) -> Option<Forward> {
    if !decrement_ttl(ctx, family)? {
        return Some(Forward::ToHost);
    }
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: bounds checked by ptr_at.
    let eth = unsafe { &mut *eth };
    eth.dst = dst.pod_mac;
    eth.src = dst.host_mac;
    // SAFETY: plain helper call.
    let rc = unsafe { bpf_redirect_peer(dst.ifindex, 0) } as i32;
    if rc == TC_ACT_REDIRECT {
        Some(Forward::Done(rc))
    } else {
        Some(Forward::Failed)
    }
}

/// `TC_ACT_REDIRECT`, what the redirect helpers return on success.
pub const TC_ACT_REDIRECT: i32 = 7;
/// Verdict to let the host stack (or a later tcx program) handle the packet.
pub const PASS: i32 = TC_ACT_UNSPEC;
