//! The stateful policy step shared by both programs: conntrack first (established flows and
//! their replies skip policy), then NetworkPolicy for new flows, then a conntrack entry.

use aya_ebpf::programs::TcContext;
use sluice_common::{
    conntrack::CtKey,
    endpoint::CFG_F_VERDICT_EVENTS,
    event::{VERDICT_ALLOW, drop_reason},
    policy::IDENTITY_WORLD,
    stats::global,
};

use crate::{
    conntrack::{self, Lookup},
    events::{self, EventInfo},
    maps::{bump_global, config},
    packet::{FRAG_LATER, IPPROTO_TCP, Packet, TCP_FIN, TCP_RST, TCP_SYN, parse_icmp_quote},
    policy::{self, Verdict},
};

fn info(pkt: &Packet, v: &Verdict, ifindex: u32) -> EventInfo {
    EventInfo {
        src: pkt.src,
        dst: pkt.dst,
        sport: pkt.sport,
        dport: pkt.dport,
        proto: pkt.proto,
        direction: v.direction,
        ep_id: v.ep_id,
        ifindex,
        src_identity: v.src_identity,
        dst_identity: v.dst_identity,
        policy_ref: v.policy_ref,
    }
}

/// May this IP packet pass? Drops are counted and reported here. `ep_id`/`direction`: the
/// endpoint the program runs for, used to attribute drops that precede any policy decision.
/// `from_local_host`: the node's own stack sent it.
#[inline(always)]
pub fn police(
    ctx: &TcContext,
    pkt: &Packet,
    from_local_host: bool,
    ifindex: u32,
    ep_id: u32,
    direction: u8,
) -> bool {
    let Some(cfg) = config() else {
        return true;
    };
    let plain = Verdict {
        reason: 0,
        ep_id,
        direction,
        src_identity: IDENTITY_WORLD,
        dst_identity: IDENTITY_WORLD,
        policy_ref: u32::MAX,
        needs_state: false,
    };
    if pkt.frag == FRAG_LATER {
        // No ports to look up: only endpoints that police nothing accept later fragments.
        if policy::either_isolated(&pkt.src, &pkt.dst) {
            events::dropped(&info(pkt, &plain, ifindex), drop_reason::FRAGMENT);
            return false;
        }
        return true;
    }
    if pkt.proto == IPPROTO_TCP && pkt.tcp_flags & TCP_SYN != 0 && pkt.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        events::dropped(&info(pkt, &plain, ifindex), drop_reason::CT_INVALID);
        return false;
    }
    let now = conntrack::now_s();
    let key = CtKey {
        src: pkt.src,
        dst: pkt.dst,
        sport: pkt.sport,
        dport: pkt.dport,
        proto: pkt.proto,
        _pad: [0; 3],
    };
    match conntrack::lookup(&key, cfg, now, pkt.tcp_flags) {
        Lookup::Hit { stale: false, .. } => return true,
        Lookup::Hit { reply, stale: true } => {
            // Policy changed since this flow was allowed: ask again, for its original direction.
            let v = if reply {
                policy::evaluate(&pkt.dst, &pkt.src, pkt.proto, pkt.sport, false)
            } else {
                policy::evaluate(&pkt.src, &pkt.dst, pkt.proto, pkt.dport, from_local_host)
            };
            if v.reason == 0 {
                conntrack::refresh_gen(&key, reply, cfg.policy_gen);
                return true;
            }
            conntrack::remove(&key, reply);
            events::dropped(&info(pkt, &v, ifindex), v.reason);
            return false;
        }
        Lookup::Miss => {}
    }
    if pkt.is_icmp_error() {
        if let Some((src, dst, proto, sport, dport)) = parse_icmp_quote(ctx, pkt) {
            let quoted = CtKey {
                src,
                dst,
                sport,
                dport,
                proto,
                _pad: [0; 3],
            };
            if conntrack::exists(&quoted, now) {
                // Related to a tracked flow (e.g. "fragmentation needed"): let it through.
                return true;
            }
        }
    }
    let v = policy::evaluate(&pkt.src, &pkt.dst, pkt.proto, pkt.dport, from_local_host);
    if v.reason != 0 {
        events::dropped(&info(pkt, &v, ifindex), v.reason);
        return false;
    }
    if conntrack::create(&key, cfg, now, pkt.tcp_flags).is_err() {
        bump_global(global::CT_INSERT_FAILED);
        if v.needs_state {
            // The table is full and this flow's replies would need an entry to get back in:
            // refuse it now rather than break it later. Unpoliced pods keep working untracked.
            events::dropped(&info(pkt, &v, ifindex), drop_reason::CT_FULL);
            return false;
        }
    } else {
        bump_global(global::CT_CREATED);
    }
    if cfg.flags & CFG_F_VERDICT_EVENTS != 0 {
        // SAFETY: helper without arguments.
        let ts = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
        events::emit(&info(pkt, &v, ifindex), VERDICT_ALLOW, 0, ts);
    }
    true
}
