//! Property tests of the plugin's input handling, through `sluice_cni::run` (the whole plugin
//! as a function of its environment and stdin).
//!
//! Nothing here may touch the system: an ADD is always given a CNI_NETNS that cannot be opened
//! as another namespace (so it stops there with 4), and every other verb that gets past
//! validation talks to a `daemonSocket` in a fresh temporary directory with no daemon behind
//! it (CHECK and GC answer 11, STATUS 50, and DEL queues the teardown beside the socket and
//! succeeds). Expected answers come from the spec's rules restated here, not from the
//! plugin's own predicates.

mod common;

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
};

use common::{ABSENT_NETNS, Answer, TempDir, env_of, run};
use proptest::{prelude::*, sample::select};
use serde_json::{Map, Value, json};

const SUPPORTED: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
const VERBS: [&str; 6] = ["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"];
const KNOWN_KEYS: [&str; 15] = [
    "cniVersion",
    "name",
    "type",
    "daemonSocket",
    "mtu",
    "ipam",
    "runtimeConfig",
    "args",
    "prevResult",
    "dns",
    "logFile",
    "cni.dev/valid-attachments",
    "cni.dev/attachments",
    "capabilities",
    "plugins",
];

/// An ADD that gets past the environment checks and stops at the netns.
fn add_env() -> BTreeMap<String, String> {
    env_of(&[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c0ffee"),
        ("CNI_NETNS", ABSENT_NETNS),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ])
}

/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`, libcni's pattern for container ids and network names.
fn skel_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// libcni's `ValidateInterfaceName` (and the kernel's `dev_valid_name`): at most 15 bytes,
/// not `.` or `..`, no `/`, `:` or whitespace.
fn skel_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && !s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
}

// ---------------------------------------------------------------------------------------------
// Generators

/// Any JSON value, with keys that are often the plugin's own.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        ".{0,12}".prop_map(Value::from),
        select(SUPPORTED.to_vec()).prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((arb_key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        select(KNOWN_KEYS.to_vec()).prop_map(str::to_owned),
        select(vec![
            "ips",
            "mac",
            "cni",
            "interfaces",
            "address",
            "containerID",
            "ifname"
        ])
        .prop_map(str::to_owned),
        ".{0,8}",
    ]
}

/// A JSON value of any type but these (`null` is never among them: it reads as absent).
fn arb_json_except(not: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let kind = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    arb_json().prop_filter("excluded type", move |v| {
        let k = kind(v);
        k != "null" && !not.contains(&k)
    })
}

fn arb_ip() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<Ipv4Addr>().prop_map(|a| a.to_string()),
        (any::<Ipv4Addr>(), 0u8..=32).prop_map(|(a, p)| format!("{a}/{p}")),
        any::<Ipv6Addr>().prop_map(|a| a.to_string()),
        (any::<Ipv6Addr>(), 0u8..=128).prop_map(|(a, p)| format!("{a}/{p}")),
    ]
}

/// Strings that are no address, with or without a prefix.
fn arb_not_ip() -> impl Strategy<Value = String> {
    prop_oneof![
        // A letter past `f` is in no IPv4 or IPv6 address.
        "[g-z][a-z0-9:./]{0,15}",
        "[0-9a-f:.]{0,6}[g-z ][0-9a-f:./]{0,6}",
        select(vec![
            "",
            "256.1.1.1",
            "1.2.3",
            "1.2.3.4.5",
            "10.0.0.1/33",
            "10.0.0.1/",
            "10.0.0.1/x",
            "10.0.0.1/24/1",
            "fd00::1/129",
            "fd00:::1",
            " 10.0.0.1",
        ])
        .prop_map(str::to_owned),
    ]
}

/// A unicast MAC a pod may use.
fn arb_mac() -> impl Strategy<Value = String> {
    any::<[u8; 6]>().prop_map(|mut b| {
        b[0] = (b[0] & 0xfe) | 0x02;
        b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")
    })
}

/// Strings that are not a usable MAC: malformed, multicast or all zeros.
fn arb_bad_mac() -> impl Strategy<Value = String> {
    prop_oneof![
        "([0-9a-f]{2}:){0,4}[0-9a-f]{2}",
        "([0-9a-f]{2}:){6}[0-9a-f]{2}",
        "[0-9a-f]{12}",
        "([0-9a-f]{2}:){5}[g-z][0-9a-f]",
        "([0-9a-f]{3}:){5}[0-9a-f]{2}",
        (any::<[u8; 6]>()).prop_map(|mut b| {
            b[0] |= 1;
            b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")
        }),
        Just("00:00:00:00:00:00".to_owned()),
    ]
}

fn valid_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9_.-]{0,30}"
}

/// A configuration with no fault: random subsets of the known keys with values of the right
/// types and ranges, and unknown keys with any value.
fn good_conf() -> impl Strategy<Value = Map<String, Value>> {
    let runtime_config = (
        prop::option::of(prop::collection::vec(arb_ip(), 0..3)),
        prop::option::of(arb_mac()),
        prop::option::of(arb_json()),
    )
        .prop_map(|(ips, mac, pm)| {
            let mut o = Map::new();
            if let Some(ips) = ips {
                o.insert("ips".into(), json!(ips));
            }
            if let Some(m) = mac {
                o.insert("mac".into(), json!(m));
            }
            if let Some(pm) = pm {
                o.insert("portMappings".into(), pm);
            }
            Value::Object(o)
        });
    let args = (
        prop::option::of(prop::collection::vec(arb_ip(), 0..3)),
        prop::option::of(arb_mac()),
    )
        .prop_map(|(ips, mac)| json!({"cni": {"ips": ips, "mac": mac}, "k8s": {"x": 1}}));
    let attachments = prop::collection::vec(("[a-f0-9]{1,12}", "eth[0-9]"), 0..3).prop_map(|v| {
        Value::Array(
            v.into_iter()
                .map(|(c, i)| json!({"containerID": c, "ifname": i}))
                .collect(),
        )
    });
    (
        (
            select(SUPPORTED.to_vec()),
            valid_name(),
            "[a-z][a-z0-9-]{0,10}",
            prop::option::of("/[a-z]{1,10}(/[a-z0-9.-]{1,10}){0,3}"),
            prop::option::of(prop_oneof![
                Just(Value::Null),
                (576u64..=65535).prop_map(Value::from)
            ]),
            prop::option::of(prop_oneof![Just(Value::Null), Just(json!({}))]),
        ),
        (
            prop::option::of(runtime_config),
            prop::option::of(args),
            prop::option::of(prop::collection::btree_map(arb_key(), arb_json(), 0..4)),
            prop::option::of(prop::collection::btree_map(".{0,6}", arb_json(), 0..3)),
            // Under /dev/null: a log line (ADD logs its failure) can never be written.
            prop::option::of("[a-z]{1,8}".prop_map(|s| format!("/dev/null/{s}.log"))),
            prop::option::of(attachments),
            // Keys the plugin does not know, with anything in them.
            prop::collection::btree_map("x-[a-zA-Z0-9_.]{0,10}", arb_json(), 0..3),
        ),
    )
        .prop_map(
            |((v, name, ty, sock, mtu, ipam), (rc, args, prev, dns, log, att, unknown))| {
                let mut o = Map::new();
                o.insert("cniVersion".into(), json!(v));
                o.insert("name".into(), json!(name));
                o.insert("type".into(), json!(ty));
                let mut put = |k: &str, v: Option<Value>| {
                    if let Some(v) = v {
                        o.insert(k.into(), v);
                    }
                };
                put("daemonSocket", sock.map(Value::from));
                put("mtu", mtu);
                put("ipam", ipam);
                put("runtimeConfig", rc);
                put("args", args);
                put("prevResult", prev.map(|m| Value::Object(m.into_iter().collect())));
                put("dns", dns.map(|m| Value::Object(m.into_iter().collect())));
                put("logFile", log.map(Value::from));
                put("cni.dev/valid-attachments", att);
                for (k, v) in unknown {
                    o.insert(k, v);
                }
                o
            },
        )
}

/// One thing wrong with a configuration, and the answer it must get.
#[derive(Clone, Debug)]
struct Fault {
    /// Where: a key path from the top (`["runtimeConfig", "ips"]`).
    path: Vec<&'static str>,
    /// The value put there (`None`: the key is removed).
    value: Option<Value>,
    code: u64,
    /// What the message must mention: the key, or the offending value.
    needle: String,
    /// libcni's checking stage: 1 JSON and `name`, 2 `cniVersion`, 3 the plugin's keys.
    stage: u8,
}

fn fault(
    path: &[&'static str],
    value: Option<Value>,
    code: u64,
    needle: impl Into<String>,
    stage: u8,
) -> Fault {
    Fault {
        path: path.to_vec(),
        value,
        code,
        needle: needle.into(),
        stage,
    }
}

fn apply(conf: &mut Map<String, Value>, f: &Fault) {
    if f.path == ["cni.dev/attachments"] {
        // The older key counts only without the newer one.
        conf.remove("cni.dev/valid-attachments");
    }
    let (last, parents) = f.path.split_last().expect("non-empty path");
    let mut o = conf;
    for p in parents {
        let slot = o.entry(p.to_string()).or_insert_with(|| json!({}));
        if !slot.is_object() {
            *slot = json!({});
        }
        o = slot.as_object_mut().expect("object");
    }
    match &f.value {
        Some(v) => o.insert(last.to_string(), v.clone()),
        None => o.remove(*last),
    };
}

/// Make an arbitrary configuration harmless should it turn out valid: an ADD that fails logs
/// a line to `logFile`, so an absolute one is moved below `/dev/null`, where nothing can be
/// created. Relative and non-string values stay, to be refused.
fn defuse(v: &mut Value) {
    if let Some(Value::String(p)) = v.get_mut("logFile")
        && p.starts_with('/')
    {
        *p = format!("/dev/null{p}");
    }
}

/// Every fault the configuration reader knows, with its code and what the message names.
fn arb_fault() -> impl Strategy<Value = Fault> {
    let non_string = || arb_json_except(&["string"]);
    let non_object = || arb_json_except(&["object"]);
    let non_array = || arb_json_except(&["array"]);
    prop_oneof![
        // name: missing, empty, not a string, or characters libcni refuses.
        select(vec![None, Some(Value::Null), Some(json!(""))]).prop_map(|v| fault(
            &["name"],
            v,
            7,
            "name",
            1
        )),
        non_string().prop_map(|v| fault(&["name"], Some(v), 7, "name", 1)),
        ".{1,20}"
            .prop_filter("invalid name", |s| !skel_name(s))
            .prop_map(|s| fault(&["name"], Some(json!(s)), 7, format!("{s:?}"), 1)),
        // cniVersion: missing (0.1.0), not a string, or not one sluice supports.
        select(vec![None, Some(Value::Null), Some(json!(""))]).prop_map(|v| fault(
            &["cniVersion"],
            v,
            1,
            "cniVersion",
            2
        )),
        non_string().prop_map(|v| fault(&["cniVersion"], Some(v), 6, "cniVersion", 2)),
        prop_oneof![
            ".{1,12}",
            "[0-9]{1,2}\\.[0-9]{1,2}\\.[0-9]{1,2}",
            "[01]\\.[0-4]\\.[01]( |\\.0)?"
        ]
        .prop_filter("unsupported", |s| !SUPPORTED.contains(&s.as_str()))
        .prop_map(|s| fault(&["cniVersion"], Some(json!(s)), 1, format!("{s:?}"), 2)),
        // type
        select(vec![None, Some(Value::Null), Some(json!(""))]).prop_map(|v| fault(
            &["type"],
            v,
            7,
            "type",
            3
        )),
        non_string().prop_map(|v| fault(&["type"], Some(v), 7, "type", 3)),
        // daemonSocket: not a string, relative, too long for a socket address, or with a NUL.
        non_string().prop_map(|v| fault(&["daemonSocket"], Some(v), 7, "daemonSocket", 3)),
        "([^/].{0,20})?".prop_map(|s| fault(&["daemonSocket"], Some(json!(s)), 7, "daemonSocket", 3)),
        "/[a-z/]{107,200}".prop_map(|s| fault(&["daemonSocket"], Some(json!(s)), 7, "daemonSocket", 3)),
        "/[a-z]{0,8}\u{0}[a-z]{0,8}".prop_map(|s| fault(
            &["daemonSocket"],
            Some(json!(s)),
            7,
            "daemonSocket",
            3
        )),
        // mtu: out of range (negative, small, huge), fractional, or not a number.
        prop_oneof![
            (i64::MIN..576).prop_map(Value::from),
            (65536i64..).prop_map(Value::from),
            (u64::MAX / 2..).prop_map(Value::from),
            (576.0f64..65535.0).prop_filter_map("fractional", |f| { (f.fract() != 0.0).then(|| json!(f)) }),
            arb_json_except(&["number"]),
        ]
        .prop_map(|v| fault(&["mtu"], Some(v), 7, "mtu", 3)),
        // ipam: sluice is its own IPAM (2); a section that is not even an object is invalid (7).
        prop::collection::btree_map("[a-z]{1,6}", arb_json(), 1..3).prop_map(|m| fault(
            &["ipam"],
            Some(Value::Object(m.into_iter().collect())),
            2,
            "ipam",
            3
        )),
        non_object().prop_map(|v| fault(&["ipam"], Some(v), 7, "ipam", 3)),
        // runtimeConfig and its ips and mac.
        non_object().prop_map(|v| fault(&["runtimeConfig"], Some(v), 7, "runtimeConfig", 3)),
        non_array().prop_map(|v| fault(&["runtimeConfig", "ips"], Some(v), 7, "runtimeConfig.ips", 3)),
        (
            prop::collection::vec(arb_ip(), 0..3),
            arb_not_ip(),
            any::<prop::sample::Index>()
        )
            .prop_map(|(mut ips, bad, at)| {
                let i = at.index(ips.len() + 1);
                ips.insert(i, bad.clone());
                fault(
                    &["runtimeConfig", "ips"],
                    Some(json!(ips)),
                    7,
                    format!("runtimeConfig.ips: {bad:?}"),
                    3,
                )
            }),
        non_string().prop_map(|v| fault(
            &["runtimeConfig", "ips"],
            Some(json!([v])),
            7,
            "runtimeConfig.ips",
            3
        )),
        non_string().prop_map(|v| fault(&["runtimeConfig", "mac"], Some(v), 7, "runtimeConfig.mac", 3)),
        arb_bad_mac().prop_map(|m| fault(
            &["runtimeConfig", "mac"],
            Some(json!(m)),
            7,
            "runtimeConfig.mac",
            3
        )),
        // args (the `args.cni` convention)
        non_object().prop_map(|v| fault(&["args"], Some(v), 7, "args", 3)),
        non_object().prop_map(|v| fault(&["args", "cni"], Some(v), 7, "args.cni", 3)),
        arb_not_ip().prop_map(|s| fault(&["args", "cni", "ips"], Some(json!([s])), 7, "args.cni.ips", 3)),
        non_string().prop_map(|v| fault(&["args", "cni", "mac"], Some(v), 7, "args.cni.mac", 3)),
        arb_bad_mac().prop_map(|m| fault(&["args", "cni", "mac"], Some(json!(m)), 7, "args.cni.mac", 3)),
        // prevResult must be a result object (a decoding failure, as for any result).
        non_object().prop_map(|v| fault(&["prevResult"], Some(v), 6, "prevResult", 3)),
        non_object().prop_map(|v| fault(&["dns"], Some(v), 7, "dns", 3)),
        non_string().prop_map(|v| fault(&["logFile"], Some(v), 7, "logFile", 3)),
        "([^/].{0,20})?".prop_map(|s| fault(&["logFile"], Some(json!(s)), 7, "logFile", 3)),
        non_array().prop_map(|v| fault(
            &["cni.dev/valid-attachments"],
            Some(v),
            7,
            "cni.dev/valid-attachments",
            3
        )),
        arb_json()
            .prop_filter("not an attachment", |v| {
                !(v.get("containerID").is_some_and(Value::is_string)
                    && v.get("ifname").is_some_and(Value::is_string))
            })
            .prop_map(|v| fault(
                &["cni.dev/attachments"],
                Some(json!([v])),
                7,
                "cni.dev/attachments",
                3
            )),
    ]
}

/// Several faults under distinct top-level keys (so that none hides another by replacing
/// the object it lives in).
fn arb_faults() -> impl Strategy<Value = Vec<Fault>> {
    prop::collection::vec(arb_fault(), 2..5).prop_map(|fs| {
        let mut seen = Vec::new();
        fs.into_iter()
            .filter(|f| {
                // The two attachment keys are one setting: the newer one wins.
                let top = f.path[0].replace("cni.dev/attachments", "cni.dev/valid-attachments");
                if seen.contains(&top) {
                    false
                } else {
                    seen.push(top);
                    true
                }
            })
            .collect()
    })
}

fn bytes_of(conf: &Map<String, Value>) -> Vec<u8> {
    serde_json::to_vec(conf).expect("serialize")
}

/// An environment value: empty, a valid name, unicode, whitespace and separators, very long.
fn env_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => valid_name(),
        1 => Just(String::new()),
        1 => ".{1,20}",
        1 => "[ \t\n./:a-z0-9]{1,8}",
        1 => "[a-z0-9]{100,300}",
        1 => select(vec![
            ".", "..", "/", ":", " ", "eth0", " eth0", "eth0 ", "eth/0", "eth:0", "eth\u{a0}0",
            "ｅｔｈ０", "éééééééé", "a23456789012345", "a234567890123456", "-x", "_x", "x\u{0}y",
        ])
        .prop_map(str::to_owned),
    ]
}

/// What the plugin must answer an invocation with this environment (and a valid config).
enum Expected {
    Refused(u64, Vec<String>),
    Succeeds,
}

fn expected_for_env(cmd: &str, cid: &str, netns: &str, ifname: &str, path: &str) -> Expected {
    use Expected::*;
    if cmd.is_empty() {
        return Refused(4, vec!["CNI_COMMAND".into()]);
    }
    if !VERBS.contains(&cmd) {
        return Refused(4, vec![format!("{cmd:?}")]);
    }
    let attachment = matches!(cmd, "ADD" | "DEL" | "CHECK");
    if attachment {
        let needs_netns = cmd != "DEL";
        let missing: Vec<String> = [
            ("CNI_CONTAINERID", cid.is_empty()),
            ("CNI_NETNS", needs_netns && netns.is_empty()),
            ("CNI_IFNAME", ifname.is_empty()),
            ("CNI_PATH", path.is_empty()),
        ]
        .into_iter()
        .filter(|(_, m)| *m)
        .map(|(k, _)| k.to_owned())
        .collect();
        if !missing.is_empty() {
            return Refused(4, vec![format!("[{}]", missing.join(","))]);
        }
        if !skel_name(cid) {
            return Refused(4, vec!["CNI_CONTAINERID".into(), format!("{cid:?}")]);
        }
        if !skel_ifname(ifname) {
            return Refused(4, vec!["CNI_IFNAME".into()]);
        }
    }
    match cmd {
        "ADD" => Refused(4, vec!["CNI_NETNS".into()]),
        "CHECK" | "GC" => Refused(11, vec!["sluiced".into()]),
        "STATUS" => Refused(50, vec!["not available".into()]),
        _ => Succeeds,
    }
}

// ---------------------------------------------------------------------------------------------
// Properties

// Case counts keep the whole file at a few seconds in a debug build on a busy machine.
proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Any bytes on stdin: no panic, one error object with a documented code.
    #[test]
    fn arbitrary_stdin_bytes_are_refused(stdin in prop::collection::vec(any::<u8>(), 0..300)) {
        let a = run(&add_env(), &stdin);
        prop_assert_ne!(a.status, 0);
    }

    /// A valid configuration damaged byte by byte: whatever it has become, the answer is a
    /// documented refusal (a damaged config that is still valid stops at the netns).
    #[test]
    fn damaged_config_bytes_are_refused(
        conf in good_conf(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        // One edit could turn `/dev/null/x.log` into a creatable path: no logFile here.
        let mut conf = conf;
        conf.remove("logFile");
        let mut b = bytes_of(&conf);
        for (at, byte) in edits {
            let i = at.index(b.len());
            b[i] = byte;
        }
        let a = run(&add_env(), &b);
        prop_assert_ne!(a.status, 0);
    }

    /// Any JSON value: no panic, a documented refusal; a non-object is a decoding failure.
    #[test]
    fn arbitrary_json_is_refused(v in arb_json()) {
        let mut v = v;
        defuse(&mut v);
        let a = run(&add_env(), v.to_string().as_bytes());
        prop_assert_ne!(a.status, 0);
        if !v.is_object() {
            a.refused(6, "object");
        }
    }

    /// A configuration cut short is not JSON: 6.
    #[test]
    fn truncated_config_is_a_decoding_failure(conf in good_conf(), at in any::<prop::sample::Index>()) {
        let b = bytes_of(&conf);
        let a = run(&add_env(), &b[..at.index(b.len())]);
        a.refused(6, "JSON");
    }

    /// A configuration with nothing wrong passes; the ADD then stops at the absent netns.
    #[test]
    fn valid_configs_proceed(conf in good_conf()) {
        run(&add_env(), &bytes_of(&conf)).refused(4, "CNI_NETNS");
    }

    /// One thing wrong: exactly its code, and a message naming the key or the value.
    #[test]
    fn one_fault_gets_its_own_answer(conf in good_conf(), f in arb_fault()) {
        let mut conf = conf;
        apply(&mut conf, &f);
        run(&add_env(), &bytes_of(&conf)).refused(f.code, &f.needle);
    }

    /// Several things wrong: the answer is the one for one of them.
    #[test]
    fn several_faults_get_one_of_their_answers(conf in good_conf(), fs in arb_faults()) {
        let mut conf = conf;
        for f in &fs {
            apply(&mut conf, f);
        }
        let a = run(&add_env(), &bytes_of(&conf));
        prop_assert!(
            fs.iter().any(|f| a.code() == f.code && a.text().contains(&f.needle)),
            "{:?} is the answer to none of {:?}", a, fs
        );
    }

    /// libcni's order: the configuration's JSON and name are checked before the container id,
    /// the container id before cniVersion and the plugin's keys.
    #[test]
    fn skel_order_config_name_then_container_id(conf in good_conf(), f in arb_fault(), cid in "[-_.][a-z]{0,5}") {
        let mut conf = conf;
        apply(&mut conf, &f);
        let mut env = add_env();
        env.insert("CNI_CONTAINERID".into(), cid);
        let a = run(&env, &bytes_of(&conf));
        if f.stage == 1 {
            a.refused(f.code, &f.needle);
        } else {
            a.refused(4, "CNI_CONTAINERID");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Arbitrary CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME and CNI_PATH with a valid
    /// configuration: no panic, and exactly the answer the skel rules and the verb give.
    #[test]
    fn environment_is_validated_like_skel(
        cmd in prop_oneof![
            3 => select(VERBS.to_vec()).prop_map(str::to_owned),
            1 => select(vec!["", "add", "Add", " ADD", "ADD ", "VERSION\n", "INIT", "FINALIZE"])
                .prop_map(str::to_owned),
            1 => ".{0,10}",
        ],
        cid in env_value(),
        netns in env_value(),
        add_netns in prop_oneof![
            Just(String::new()),
            env_value().prop_map(|s| format!("{ABSENT_NETNS}/{s}")),
            // Real files, none another network namespace: the plugin's own, another kind of
            // namespace, a directory, a device.
            select(vec!["/proc/self/ns/net", "/proc/self/ns/mnt", "/proc/self/ns/uts", ".", "..", "/", "/dev/null", "relative/netns"])
                .prop_map(str::to_owned),
        ],
        ifname in env_value(),
        path in env_value(),
    ) {
        // An ADD must not reach a namespace it could configure: its netns is drawn from
        // paths that cannot be one. The other verbs never open the netns before sluiced
        // answers, and no sluiced answers here.
        let netns = if cmd == "ADD" { add_netns } else { netns };
        let tmp = TempDir::new();
        let conf = json!({
            "cniVersion": "1.1.0", "name": "n", "type": "sluice",
            "daemonSocket": tmp.socket(),
            "cni.dev/valid-attachments": [],
            "prevResult": {"interfaces": [{"name": ifname}]},
        });
        let mut env = BTreeMap::new();
        for (k, v) in [("CNI_COMMAND", &cmd), ("CNI_CONTAINERID", &cid), ("CNI_NETNS", &netns), ("CNI_IFNAME", &ifname), ("CNI_PATH", &path)] {
            // An empty value and an unset variable are the same to the plugin; try both.
            if !v.is_empty() || cid.len() % 2 == 0 {
                env.insert(k.to_owned(), v.clone());
            }
        }
        let a = run(&env, conf.to_string().as_bytes());
        match expected_for_env(&cmd, &cid, &netns, &ifname, &path) {
            Expected::Refused(code, needles) => {
                for n in needles {
                    a.refused(code, &n);
                }
            }
            Expected::Succeeds if cmd == "VERSION" => {
                prop_assert_eq!(a.status, 0);
                prop_assert!(a.reply.as_ref().is_some_and(|r| r.get("supportedVersions").is_some()));
            }
            Expected::Succeeds => {
                // DEL with sluiced down: the teardown is queued beside the socket, and DEL
                // succeeds with nothing on stdout.
                prop_assert_eq!(a.status, 0, "{:?}", a);
                prop_assert!(a.reply.is_none());
                prop_assert!(tmp.queued(&cid, &ifname).exists(), "no queued teardown");
            }
        }
    }

    /// Arbitrary CNI_ARGS: no panic; accepted (CHECK reaches sluiced: 11) or refused with 4
    /// naming CNI_ARGS.
    #[test]
    fn arbitrary_cni_args(args in prop_oneof![".{0,40}", "[;=A-Za-z0-9_ ,./:]{0,40}"]) {
        let tmp = TempDir::new();
        let a = run(&check_env(&args), &check_conf(&tmp));
        if a.code() != 11 {
            a.refused(4, "CNI_ARGS");
        }
    }

    /// Well-formed `K=V;K=V` lists with any keys (unknown ones tolerated, values may hold
    /// `=`) are accepted, in any order, with stray empty segments.
    #[test]
    fn well_formed_cni_args_are_accepted(pairs in arb_pairs(), leading in any::<bool>()) {
        let s = format!("{}{}", if leading { ";" } else { "" }, join_pairs(&pairs));
        let tmp = TempDir::new();
        run(&check_env(&s), &check_conf(&tmp)).refused(11, "sluiced");
        let parsed = sluice_cni::spec::args::parse(&s).expect("accepted");
        let unknown: Vec<&str> = pairs
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| !KNOWN_ARGS.contains(k))
            .collect();
        prop_assert_eq!(parsed.unknown, unknown);
    }

    /// A segment without `=` is refused with 4 naming it, by ADD and CHECK; DEL ignores
    /// CNI_ARGS (it tears down by container id and interface) and VERSION never reads it.
    #[test]
    fn pairs_without_equals_are_refused(
        pairs in arb_pairs(),
        bad in "[^;=]{1,20}",
        at in any::<prop::sample::Index>(),
    ) {
        let mut parts: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        parts.insert(at.index(parts.len() + 1), bad.clone());
        let s = parts.join(";");
        let tmp = TempDir::new();
        let needle = format!("CNI_ARGS: {bad:?}");
        run(&check_env(&s), &check_conf(&tmp)).refused(4, &needle);
        let mut add = add_env();
        add.insert("CNI_ARGS".into(), s.clone());
        run(&add, &check_conf(&tmp)).refused(4, &needle);
        // A DEL queues a teardown (an fsync): one case in four is enough.
        if at.index(4) == 0 {
            let mut del = check_env(&s);
            del.insert("CNI_COMMAND".into(), "DEL".into());
            let a = run(&del, &check_conf(&tmp));
            prop_assert_eq!(a.status, 0, "{:?}", a);
        }
        let version = env_of(&[("CNI_COMMAND", "VERSION"), ("CNI_ARGS", &s)]);
        prop_assert_eq!(run(&version, b"").status, 0);
    }
}

const KNOWN_ARGS: [&str; 7] = [
    "IgnoreUnknown",
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
    "IP",
    "MAC",
];

/// `K=V` pairs: the keys runtimes send (IP= with valid addresses) and any others.
fn arb_pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    let pair = prop_oneof![
        ("[A-Za-z_][A-Za-z0-9_]{0,15}", "[^;]{0,20}").prop_filter("IP= gets addresses", |(k, _)| k != "IP"),
        (
            select(KNOWN_ARGS[..5].to_vec()).prop_map(str::to_owned),
            "[^;]{0,20}"
        ),
        (
            Just("IP".to_owned()),
            prop::collection::vec(arb_ip(), 0..3).prop_map(|v| v.join(","))
        ),
        // MAC= is checked by ADD (which these never reach): any value here.
        (Just("MAC".to_owned()), "[^;]{0,20}"),
    ];
    prop::collection::vec(pair, 0..6)
}

fn join_pairs(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";;")
}

/// A CHECK that, with `check_conf`, gets past every check and reaches (the absent) sluiced.
fn check_env(args: &str) -> BTreeMap<String, String> {
    env_of(&[
        ("CNI_COMMAND", "CHECK"),
        ("CNI_CONTAINERID", "c0ffee"),
        ("CNI_NETNS", ABSENT_NETNS),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
        ("CNI_ARGS", args),
    ])
}

fn check_conf(tmp: &TempDir) -> Vec<u8> {
    json!({
        "cniVersion": "1.0.0", "name": "n", "type": "sluice", "daemonSocket": tmp.socket(),
        "prevResult": {"interfaces": [{"name": "eth0", "sandbox": ABSENT_NETNS}]},
    })
    .to_string()
    .into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// VERSION answers whatever is on stdin and in the other variables, with the versions
    /// podman needs, in the version asked for when sluice has it.
    #[test]
    fn version_always_answers(
        stdin in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            prop_oneof![select(SUPPORTED.to_vec()).prop_map(str::to_owned), ".{0,8}"]
                .prop_map(|v| json!({"cniVersion": v}).to_string().into_bytes()),
            arb_json().prop_map(|v| v.to_string().into_bytes()),
        ],
        others in prop::collection::vec(env_value(), 5),
    ) {
        let mut env = env_of(&[("CNI_COMMAND", "VERSION")]);
        for (k, v) in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH", "CNI_ARGS"].iter().zip(&others) {
            env.insert(k.to_string(), v.clone());
        }
        let a: Answer = run(&env, &stdin);
        prop_assert_eq!(a.status, 0);
        let r = a.reply.expect("VERSION prints its reply");
        let versions: Vec<&str> = r["supportedVersions"]
            .as_array()
            .expect("supportedVersions")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for v in ["0.4.0", "1.0.0", "1.1.0"] {
            prop_assert!(versions.contains(&v), "{} missing from {:?}", v, versions);
        }
        let asked = serde_json::from_slice::<Value>(&stdin)
            .ok()
            .and_then(|v| v.get("cniVersion").and_then(Value::as_str).map(str::to_owned))
            .filter(|v| SUPPORTED.contains(&v.as_str()));
        prop_assert_eq!(r["cniVersion"].as_str(), Some(asked.as_deref().unwrap_or("1.1.0")));
    }
}
