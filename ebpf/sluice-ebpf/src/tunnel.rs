//! Pods on other nodes through the VXLAN overlay: set the tunnel key (the remote node's
//! address, the VNI) on the skb and hand it to the node's collect-metadata VXLAN device,
//! which encapsulates. The inner frame goes from this node's VXLAN MAC to the remote node's.

use aya_ebpf::{
    bindings::{BPF_F_TUNINFO_IPV6, bpf_tunnel_key},
    helpers::{bpf_redirect, bpf_skb_set_tunnel_key},
    programs::TcContext,
};
use sluice_common::endpoint::{DatapathConfig, NODE_F_UNDERLAY_V4, RemoteNode};

use crate::packet::{EthHdr, ptr_at};

/// `Some(verdict)` when handed to the tunnel, `None` when the helper refused.
#[inline(always)]
pub fn to_remote_node(ctx: &TcContext, node: &RemoteNode, cfg: &DatapathConfig) -> Option<i32> {
    // SAFETY: plain old data, all-zero is valid.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    key.tunnel_id = cfg.vxlan_vni;
    key.tunnel_ttl = 64;
    let flags = if node.flags & NODE_F_UNDERLAY_V4 != 0 {
        // The helper takes the IPv4 endpoint in host byte order.
        key.__bindgen_anon_1.remote_ipv4 = u32::from_be(node.node_ip.v4_raw());
        0
    } else {
        key.__bindgen_anon_1.remote_ipv6 = node.node_ip.words;
        BPF_F_TUNINFO_IPV6 as u64
    };
    // SAFETY: valid context and key for the helper's size.
    let rc = unsafe {
        bpf_skb_set_tunnel_key(
            ctx.skb.skb,
            &mut key,
            core::mem::size_of::<bpf_tunnel_key>() as u32,
            flags,
        )
    };
    if rc < 0 {
        return None;
    }
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: bounds checked by ptr_at.
    unsafe {
        (*eth).dst = node.mac;
        (*eth).src = cfg.vxlan_mac;
    }
    // SAFETY: plain helper call; flags 0 = out of the VXLAN device.
    Some(unsafe { bpf_redirect(cfg.vxlan_ifindex, 0) } as i32)
}
