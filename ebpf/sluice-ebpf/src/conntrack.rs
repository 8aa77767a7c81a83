//! Connection tracking: one entry per flow, keyed by its first packet's 5-tuple, shared by all
//! programs on the node. A packet either matches an entry in the original direction, matches
//! it reversed (a reply), is an ICMP error about a tracked flow (related), or starts a flow.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use sluice_common::{
    conntrack::{
        CT_F_ESTABLISHED, CT_F_FIN_FWD, CT_F_FIN_REV, CT_F_RST, CT_F_SEEN_REPLY, CT_F_SYN, CtEntry, CtKey,
    },
    endpoint::DatapathConfig,
};

use crate::{
    maps::SL_CT,
    packet::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, TCP_FIN, TCP_RST, TCP_SYN},
};

/// Seconds of CLOCK_MONOTONIC, the clock `sluiced`'s garbage collector compares with.
#[inline(always)]
pub fn now_s() -> u32 {
    // SAFETY: helper without arguments.
    (unsafe { bpf_ktime_get_ns() } / 1_000_000_000) as u32
}

pub enum Lookup {
    /// No live entry in either direction.
    Miss,
    /// The packet belongs to a tracked flow; `reply` when it travels against the flow's
    /// original direction. `stale`: policy changed since the flow was last allowed.
    Hit { reply: bool, stale: bool },
}

#[inline(always)]
fn lifetime(cfg: &DatapathConfig, proto: u8, flags: u32) -> u32 {
    match proto {
        IPPROTO_TCP => {
            if flags & CT_F_RST != 0 || flags & (CT_F_FIN_FWD | CT_F_FIN_REV) == (CT_F_FIN_FWD | CT_F_FIN_REV)
            {
                cfg.ct_tcp_closing_s
            } else if flags & CT_F_ESTABLISHED != 0 {
                cfg.ct_tcp_established_s
            } else {
                cfg.ct_tcp_syn_s
            }
        }
        IPPROTO_UDP => cfg.ct_udp_s,
        IPPROTO_ICMP | IPPROTO_ICMPV6 => cfg.ct_icmp_s,
        _ => cfg.ct_other_s,
    }
}

/// New state flags after a packet with `tcp_flags` in direction `reply`.
#[inline(always)]
fn next_flags(flags: u32, proto: u8, tcp_flags: u8, reply: bool) -> u32 {
    let mut f = flags;
    if reply {
        f |= CT_F_SEEN_REPLY | CT_F_ESTABLISHED;
    }
    if proto == IPPROTO_TCP {
        if tcp_flags & TCP_RST != 0 {
            f |= CT_F_RST;
        }
        if tcp_flags & TCP_FIN != 0 {
            f |= if reply { CT_F_FIN_REV } else { CT_F_FIN_FWD };
        }
        // A new SYN on a closed tuple reopens it (port reuse).
        if !reply && tcp_flags & TCP_SYN != 0 && f & (CT_F_RST | CT_F_FIN_FWD) != 0 {
            f = CT_F_SYN;
        }
    }
    f
}

/// Find the packet's flow (either direction) and refresh its state and expiry. Writes to the
/// entry only when something changed (at most once a second for a busy flow), so established
/// traffic does not bounce the entry's cache line between CPUs.
#[inline(always)]
pub fn lookup(key: &CtKey, cfg: &DatapathConfig, now: u32, tcp_flags: u8) -> Lookup {
    let mut reply = false;
    let mut entry = SL_CT.get_ptr_mut(key);
    if entry.is_none() {
        reply = true;
        entry = SL_CT.get_ptr_mut(&key.reversed());
    }
    let Some(e) = entry else {
        return Lookup::Miss;
    };
    // SAFETY: a pointer to a live map value; concurrent updates race benignly (flags only grow,
    // expiry only moves forward within a second).
    let e = unsafe { &mut *e };
    if e.expires <= now {
        return Lookup::Miss;
    }
    let flags = next_flags(e.flags, key.proto, tcp_flags, reply);
    if flags != e.flags {
        e.flags = flags;
    }
    let expires = now + lifetime(cfg, key.proto, flags);
    if expires != e.expires {
        e.expires = expires;
    }
    Lookup::Hit {
        reply,
        stale: e.policy_gen != cfg.policy_gen,
    }
}

/// Record that policy (re-)allowed the flow of `key` (original direction) under the current
/// generation.
#[inline(always)]
pub fn refresh_gen(key: &CtKey, reply: bool, generation: u32) {
    let e = if reply {
        SL_CT.get_ptr_mut(&key.reversed())
    } else {
        SL_CT.get_ptr_mut(key)
    };
    if let Some(e) = e {
        // SAFETY: live map value.
        unsafe { (*e).policy_gen = generation };
    }
}

/// Forget the flow (policy no longer allows it).
#[inline(always)]
pub fn remove(key: &CtKey, reply: bool) {
    let _ = if reply {
        SL_CT.remove(&key.reversed())
    } else {
        SL_CT.remove(key)
    };
}

/// Start tracking a flow. `Err` when the table is full.
#[inline(always)]
pub fn create(key: &CtKey, cfg: &DatapathConfig, now: u32, tcp_flags: u8) -> Result<(), ()> {
    let mut flags = 0;
    if key.proto == IPPROTO_TCP && tcp_flags & TCP_SYN != 0 {
        flags |= CT_F_SYN;
    }
    let entry = CtEntry {
        expires: now + lifetime(cfg, key.proto, flags),
        policy_gen: cfg.policy_gen,
        flags,
        _pad: 0,
    };
    SL_CT.insert(key, &entry, 0).map_err(|_| ())
}

/// Is there a live flow with this 5-tuple in either direction? (For ICMP errors.)
#[inline(always)]
pub fn exists(key: &CtKey, now: u32) -> bool {
    // SAFETY: read-only look at map values.
    if let Some(e) = unsafe { SL_CT.get(key) } {
        if e.expires > now {
            return true;
        }
    }
    match unsafe { SL_CT.get(&key.reversed()) } {
        Some(e) => e.expires > now,
        None => false,
    }
}
