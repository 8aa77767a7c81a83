//! Drop accounting and events: every drop is counted on its endpoint by reason and sent to
//! `sluiced` through the ring buffer; allowed new flows too while verdict events are on.

use sluice_common::{
    event::{FlowEvent, VERDICT_DROP, drop_reason},
    ip::IpAddr128,
    stats::global,
};

use crate::maps::{SL_EVENTS, bump_global, ep_stats};

/// Who/what an event is about.
pub struct EventInfo {
    pub src: IpAddr128,
    pub dst: IpAddr128,
    /// Network byte order.
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub direction: u8,
    pub ep_id: u32,
    pub ifindex: u32,
    pub src_identity: u32,
    pub dst_identity: u32,
    pub policy_ref: u32,
}

#[inline(always)]
pub fn emit(info: &EventInfo, verdict: u8, reason: u8, ts_ns: u64) {
    match SL_EVENTS.reserve::<FlowEvent>(0) {
        Some(mut slot) => {
            slot.write(FlowEvent {
                ts_ns,
                src: info.src,
                dst: info.dst,
                sport: u16::from_be(info.sport),
                dport: u16::from_be(info.dport),
                proto: info.proto,
                direction: info.direction,
                verdict,
                reason,
                ep_id: info.ep_id,
                ifindex: info.ifindex,
                src_identity: info.src_identity,
                dst_identity: info.dst_identity,
                policy_ref: info.policy_ref,
                _pad: 0,
            });
            slot.submit(0);
        }
        None => bump_global(global::EVENTS_LOST),
    }
}

/// Count a drop on `info.ep_id` and report it.
#[inline(always)]
pub fn dropped(info: &EventInfo, reason: u8) {
    if let Some(s) = ep_stats(info.ep_id) {
        let r = reason as usize;
        if r < drop_reason::COUNT {
            s.drops[r] += 1;
        }
    }
    // SAFETY: helper without arguments.
    let ts = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    emit(info, VERDICT_DROP, reason, ts);
}
