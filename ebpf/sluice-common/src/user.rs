//! Userspace side: lets aya read and write the ABI types in maps.

use crate::{
    conntrack::{CtEntry, CtKey},
    endpoint::{DatapathConfig, IpInfo, LocalEndpoint, RemoteNode},
    event::FlowEvent,
    ip::{IpAddr128, IpPrefixData},
    policy::{PolicyKeyData, PolicyValue},
    stats::EndpointStats,
};

// SAFETY: all of these are #[repr(C)], made of integers and byte arrays only, with every
// padding byte an explicit field, so any bit pattern is valid and none is uninitialised.
unsafe impl aya::Pod for IpAddr128 {}
unsafe impl aya::Pod for IpPrefixData {}
unsafe impl aya::Pod for LocalEndpoint {}
unsafe impl aya::Pod for RemoteNode {}
unsafe impl aya::Pod for IpInfo {}
unsafe impl aya::Pod for DatapathConfig {}
unsafe impl aya::Pod for PolicyKeyData {}
unsafe impl aya::Pod for PolicyValue {}
unsafe impl aya::Pod for CtKey {}
unsafe impl aya::Pod for CtEntry {}
unsafe impl aya::Pod for FlowEvent {}
unsafe impl aya::Pod for EndpointStats {}
