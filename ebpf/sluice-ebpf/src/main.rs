//! sluice's datapath: two tc programs attached (tcx) to the host-side veth of every pod.
//!
//! - `from_pod` (ingress of the host veth, i.e. packets the pod sends): anti-spoofing, ARP and
//!   neighbour-solicitation answers, conntrack + NetworkPolicy, then either `bpf_redirect_peer`
//!   straight into a local destination pod or the host stack for everything else.
//! - `to_pod` (egress of the host veth, i.e. packets the host stack delivers to the pod):
//!   conntrack + the pod's ingress policy for traffic from the node, remote nodes and the world.
//!
//! Entry points are thin: each `try_*` returns the verdict, and `Err` (a header too short to
//! police) becomes a drop.
#![no_std]
#![no_main]

mod conntrack;
mod events;
mod fib;
mod flow;
mod forward;
mod maps;
mod neigh;
mod packet;
mod policy;
mod tunnel;

use aya_ebpf::{
    bindings::{__sk_buff, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use aya_log_ebpf::error;
use sluice_common::{
    direction,
    endpoint::{CFG_F_ROUTING_VXLAN, EP_F_HAS_V4, EP_F_HAS_V6, LocalEndpoint},
    event::drop_reason,
    ip::{IpAddr128, IpPrefixData},
    policy::IDENTITY_WORLD,
    stats::global,
};

use crate::{
    events::EventInfo,
    forward::{Forward, PASS},
    maps::{SL_ENDPOINTS, SL_IFACES, SL_NODES, bump_global, ep_stats},
    neigh::ArpAction,
    packet::{ETH_HLEN, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, EthHdr, IPPROTO_ICMPV6, Ipv6Hdr, ptr_at},
};

#[classifier]
pub fn from_pod(ctx: TcContext) -> i32 {
    try_from_pod(&ctx).unwrap_or(TC_ACT_SHOT)
}

#[classifier]
pub fn to_pod(ctx: TcContext) -> i32 {
    try_to_pod(&ctx).unwrap_or(TC_ACT_SHOT)
}

#[classifier]
pub fn from_uplink(ctx: TcContext) -> i32 {
    // Anything this program cannot make sense of is the node's business, not a drop.
    try_from_uplink(&ctx).unwrap_or(PASS)
}

#[inline(always)]
fn skb(ctx: &TcContext) -> &__sk_buff {
    // SAFETY: the context pointer of a tc program is a valid __sk_buff for the program's run.
    unsafe { &*ctx.skb.skb }
}

/// An event about a packet from/to `ep` before any address is known to be trustworthy.
#[inline(always)]
fn early(ep: &LocalEndpoint, ifindex: u32, dir: u8, src: IpAddr128, dst: IpAddr128, proto: u8) -> EventInfo {
    EventInfo {
        src,
        dst,
        sport: 0,
        dport: 0,
        proto,
        direction: dir,
        ep_id: ep.ep_id,
        ifindex,
        src_identity: IDENTITY_WORLD,
        dst_identity: IDENTITY_WORLD,
        policy_ref: u32::MAX,
    }
}

/// Is this ICMPv6 type neighbour discovery (router/neighbour solicitation/advertisement,
/// redirect)? ND is link-local business between pod and host and never policed.
#[inline(always)]
fn is_nd(icmp_type: u8) -> bool {
    (133..=137).contains(&icmp_type)
}

fn try_from_pod(ctx: &TcContext) -> Result<i32, ()> {
    bump_global(global::FROM_POD_RUNS);
    let ifindex = skb(ctx).ifindex;
    // SAFETY: read-only use of a map value for the duration of this run.
    let Some(ep) = (unsafe { SL_IFACES.get(&ifindex) }) else {
        // Not (or no longer) a sluice endpoint: stay out of the way.
        return Ok(PASS);
    };
    let eth: *const EthHdr = ptr_at(ctx, 0).ok_or(())?;
    // SAFETY: bounds checked by ptr_at.
    let (src_mac, ethertype) = unsafe { ((*eth).src, u16::from_be((*eth).proto)) };
    let none = IpAddr128::default();
    if src_mac != ep.pod_mac {
        events::dropped(
            &early(ep, ifindex, direction::EGRESS, none, none, 0),
            drop_reason::SPOOFED_MAC,
        );
        return Ok(TC_ACT_SHOT);
    }
    if let Some(s) = ep_stats(ep.ep_id) {
        s.tx_packets += 1;
        s.tx_bytes += ctx.len() as u64;
    }
    match ethertype {
        ETH_P_ARP => {
            return match neigh::arp_from_pod(ctx, ep, ifindex).ok_or(())? {
                ArpAction::Replied(v) => Ok(v),
                ArpAction::Pass => Ok(PASS),
                ArpAction::SpoofedMac => {
                    events::dropped(
                        &early(ep, ifindex, direction::EGRESS, none, none, 0),
                        drop_reason::SPOOFED_MAC,
                    );
                    Ok(TC_ACT_SHOT)
                }
                ArpAction::SpoofedIp => {
                    events::dropped(
                        &early(ep, ifindex, direction::EGRESS, none, none, 0),
                        drop_reason::SPOOFED_IP,
                    );
                    Ok(TC_ACT_SHOT)
                }
            };
        }
        ETH_P_IP => {}
        ETH_P_IPV6 => {
            let ip: *const Ipv6Hdr = ptr_at(ctx, ETH_HLEN).ok_or(())?;
            // SAFETY: bounds checked by ptr_at.
            let (next, src) = unsafe { ((*ip).next_hdr, (*ip).src) };
            if next == IPPROTO_ICMPV6 {
                if let Some(v) = neigh::ns_from_pod(ctx, ep, ifindex) {
                    return Ok(v);
                }
            }
            // Unspecified or link-local source: link-scoped traffic (DAD, MLD, RS, ND) that
            // only the host can receive.
            if src == [0; 4] || neigh::is_link_local(src[0]) {
                return Ok(PASS);
            }
        }
        // Nothing else is routed anywhere from a pod's link: the host stack may look.
        _ => return Ok(PASS),
    }
    let Some(pkt) = packet::parse_ip(ctx, ethertype) else {
        events::dropped(
            &early(ep, ifindex, direction::EGRESS, none, none, 0),
            drop_reason::CT_INVALID,
        );
        return Ok(TC_ACT_SHOT);
    };
    let own = if pkt.family == 4 {
        ep.flags & EP_F_HAS_V4 != 0 && pkt.src.is_v4() && pkt.src.v4_raw() == ep.ipv4
    } else {
        ep.flags & EP_F_HAS_V6 != 0 && pkt.src == ep.ipv6
    };
    if !own {
        events::dropped(
            &early(ep, ifindex, direction::EGRESS, pkt.src, pkt.dst, pkt.proto),
            drop_reason::SPOOFED_IP,
        );
        return Ok(TC_ACT_SHOT);
    }
    if pkt.proto == IPPROTO_ICMPV6 && is_nd(pkt.icmp_type) {
        return Ok(PASS);
    }
    if !flow::police(ctx, &pkt, false, ifindex, ep.ep_id, direction::EGRESS) {
        return Ok(TC_ACT_SHOT);
    }
    // SAFETY: read-only use of a map value for the duration of this run.
    if let Some(dst) = unsafe { SL_ENDPOINTS.get(&pkt.dst) } {
        let len = ctx.len() as u64;
        return match forward::to_local_pod(ctx, pkt.family, dst).ok_or(())? {
            Forward::Done(v) => {
                if let Some(s) = ep_stats(ep.ep_id) {
                    s.tx_redirected += 1;
                }
                if let Some(s) = ep_stats(dst.ep_id) {
                    s.rx_packets += 1;
                    s.rx_bytes += len;
                }
                Ok(v)
            }
            Forward::ToHost => Ok(PASS),
            Forward::Failed => {
                error!(ctx, "sluice: bpf_redirect_peer to ifindex {} failed", dst.ifindex);
                events::dropped(
                    &early(ep, ifindex, direction::EGRESS, pkt.src, pkt.dst, pkt.proto),
                    drop_reason::FORWARD_FAILED,
                );
                Ok(TC_ACT_SHOT)
            }
        };
    }
    // A pod on another node: through the overlay, or routed natively by the program.
    if let Some(cfg) = maps::config() {
        let key = aya_ebpf::maps::lpm_trie::Key::new(
            128,
            IpPrefixData {
                bytes: pkt.dst.to_bytes(),
            },
        );
        if let Some(node) = SL_NODES.get(&key) {
            if cfg.flags & CFG_F_ROUTING_VXLAN == 0 {
                if let Some(v) = fib::to_remote_node(ctx, &pkt, ifindex) {
                    bump_global(global::TO_REMOTE);
                    return Ok(v);
                }
            } else {
                bump_global(global::TO_REMOTE);
                return match tunnel::to_remote_node(ctx, node, cfg) {
                    Some(v) => Ok(v),
                    None => {
                        events::dropped(
                            &early(ep, ifindex, direction::EGRESS, pkt.src, pkt.dst, pkt.proto),
                            drop_reason::NO_TUNNEL,
                        );
                        Ok(TC_ACT_SHOT)
                    }
                };
            }
        }
    }
    bump_global(global::TO_HOST);
    Ok(PASS)
}

/// Native routing, receiving side: a packet from another node to a pod of this node skips
/// the node's IP stack. It gets exactly what `to_pod` would give it (conntrack and the pod's
/// ingress policy), then goes straight into the pod with `bpf_redirect_peer`. Everything else
/// (the node's own traffic, ARP, ND, what cannot be forwarded as is) passes on to the stack.
fn try_from_uplink(ctx: &TcContext) -> Result<i32, ()> {
    let eth: *const EthHdr = ptr_at(ctx, 0).ok_or(())?;
    // SAFETY: bounds checked by ptr_at.
    let ethertype = unsafe { u16::from_be((*eth).proto) };
    if ethertype != ETH_P_IP && ethertype != ETH_P_IPV6 {
        return Ok(PASS);
    }
    let Some(pkt) = packet::parse_ip(ctx, ethertype) else {
        return Ok(PASS);
    };
    // SAFETY: read-only use of a map value for the duration of this run.
    let Some(dst) = (unsafe { SL_ENDPOINTS.get(&pkt.dst) }) else {
        return Ok(PASS);
    };
    if pkt.proto == IPPROTO_ICMPV6 && is_nd(pkt.icmp_type) {
        return Ok(PASS);
    }
    if !flow::police(ctx, &pkt, false, dst.ifindex, dst.ep_id, direction::INGRESS) {
        return Ok(TC_ACT_SHOT);
    }
    let len = ctx.len() as u64;
    match forward::to_local_pod(ctx, pkt.family, dst).ok_or(())? {
        Forward::Done(v) => {
            bump_global(global::FROM_UPLINK_TO_POD);
            if let Some(s) = ep_stats(dst.ep_id) {
                s.rx_packets += 1;
                s.rx_bytes += len;
            }
            Ok(v)
        }
        // The stack answers an expiring TTL with ICMP time exceeded.
        Forward::ToHost => Ok(PASS),
        // Headers already rewritten for the pod: the stack could not route it any more.
        Forward::Failed => Ok(TC_ACT_SHOT),
    }
}

fn try_to_pod(ctx: &TcContext) -> Result<i32, ()> {
    bump_global(global::TO_POD_RUNS);
    let sk = skb(ctx);
    let (ifindex, ingress_ifindex) = (sk.ifindex, sk.ingress_ifindex);
    // SAFETY: read-only use of a map value for the duration of this run.
    let Some(ep) = (unsafe { SL_IFACES.get(&ifindex) }) else {
        return Ok(PASS);
    };
    let eth: *const EthHdr = ptr_at(ctx, 0).ok_or(())?;
    // SAFETY: bounds checked by ptr_at.
    let ethertype = unsafe { u16::from_be((*eth).proto) };
    if ethertype != ETH_P_IP && ethertype != ETH_P_IPV6 {
        // ARP from the host, and anything else non-IP: not policed.
        return Ok(PASS);
    }
    if ethertype == ETH_P_IPV6 {
        let ip: *const Ipv6Hdr = ptr_at(ctx, ETH_HLEN).ok_or(())?;
        // SAFETY: bounds checked by ptr_at.
        let src = unsafe { (*ip).src };
        if src == [0; 4] || neigh::is_link_local(src[0]) {
            return Ok(PASS);
        }
    }
    let none = IpAddr128::default();
    let Some(pkt) = packet::parse_ip(ctx, ethertype) else {
        events::dropped(
            &early(ep, ifindex, direction::INGRESS, none, none, 0),
            drop_reason::CT_INVALID,
        );
        return Ok(TC_ACT_SHOT);
    };
    if pkt.proto == IPPROTO_ICMPV6 && is_nd(pkt.icmp_type) {
        return Ok(PASS);
    }
    // skb_iif is 0 for packets the node itself generated (kubelet probes, hostNetwork peers).
    let from_local_host = ingress_ifindex == 0;
    if !flow::police(ctx, &pkt, from_local_host, ifindex, ep.ep_id, direction::INGRESS) {
        return Ok(TC_ACT_SHOT);
    }
    if let Some(s) = ep_stats(ep.ep_id) {
        s.rx_packets += 1;
        s.rx_bytes += ctx.len() as u64;
    }
    Ok(PASS)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "license")]
pub static LICENSE: [u8; 4] = *b"GPL\0";
