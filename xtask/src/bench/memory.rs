//! sluiced's resident memory (VmRSS, and the peak VmHWM, from /proc/PID/status): idle, with E
//! real endpoints (pods ADDed through the plugin, 10 at a time), then with R rules on top
//! (the same rule shape as the policy cost: each selects one of four labelled pods and lets one
//! ipBlock /32 in on one port).

use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use super::{
    Bins, Config,
    cni::Plugin,
    cni_latency,
    daemon::Sluiced,
    netns::Netns,
    policy_cost::{self, OTHER_PODS},
    report::{Report, Section, fmt_num},
};

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub fn run(cfg: &Config, bins: &Bins, rep: &mut Report) -> Result<()> {
    let (e, r) = (cfg.rss_endpoints, cfg.rss_rules);
    let node = Netns::new("node")?;
    let d = Sluiced::start(bins, &node, "10.240.0.0/16", true)?;
    // Pod objects for every endpoint: the first four carry the labels the rules select.
    let pods: Vec<(String, serde_json::Value)> = (0..e)
        .map(|i| {
            let labels = if i < OTHER_PODS {
                json!({ "other": format!("o{i}") })
            } else {
                json!({ "app": "filler" })
            };
            (format!("p{i}"), labels)
        })
        .collect();
    let rev = d.revision()?;
    d.write_manifest("00-model.json", &policy_cost::model(&pods))?;
    d.wait_applied(rev, Duration::from_secs(60), |_| true)?;
    let idle = d.memory_kib()?;
    let plugin = Plugin::new("sluice", bins.get("sluice")?, &d.conf("slb-sluice"), &node);
    let nss = cni_latency::namespaces(e)?;
    let (pods, add_wall) = cni_latency::add_concurrently(&plugin, nss, cfg.concurrency, "p")?;
    let with_eps = d.memory_kib()?;
    let apply_s = policy_cost::apply_policies(&d, r)?;
    // Let the allocator settle after the compile's temporary peak.
    std::thread::sleep(Duration::from_millis(500));
    let with_rules = d.memory_kib()?;
    let entries = d.status()?["policy_entries"].as_u64().unwrap_or(0);
    eprintln!(
        "bench: sluiced with {} endpoints and {r} rules ({entries} policy entries): VmRSS {:.1} MiB",
        pods.len(),
        mib(with_rules.0)
    );
    rep.num("daemon_rss_mib_idle", mib(idle.0));
    rep.num("daemon_rss_mib_endpoints_only", mib(with_eps.0));
    rep.num("daemon_rss_endpoints", pods.len() as f64);
    rep.num("daemon_rss_rules", r as f64);
    rep.num("daemon_hwm_mib", mib(with_rules.1));
    rep.num(&format!("add_{e}pods_conc_wall_s"), add_wall);
    rep.num(
        &format!("policy_apply_s_{e}ep_{}", policy_cost::n_label(r)),
        apply_s,
    );
    // The headline key names the scale it was measured at (1k endpoints / 10k rules in a
    // full run); a smaller run writes its own scale's key instead.
    let key = if e == 1000 && r == 10_000 {
        "daemon_rss_mib_1k".to_owned()
    } else {
        format!("daemon_rss_mib_{e}ep_{}", policy_cost::n_label(r))
    };
    rep.num(&key, mib(with_rules.0));
    rep.sections.push(Section {
        title: "sluiced memory (VmRSS, MiB)".into(),
        note: format!(
            "{} endpoints ADDed through the plugin ({} at a time, {add_wall:.1}s), then {r} rules \
             ({entries} policy entries). Peak (VmHWM): {} MiB.",
            pods.len(),
            cfg.concurrency,
            fmt_num(mib(with_rules.1))
        ),
        header: ["idle", "with endpoints", "with endpoints + rules"]
            .map(String::from)
            .to_vec(),
        rows: vec![vec![
            fmt_num(mib(idle.0)),
            fmt_num(mib(with_eps.0)),
            fmt_num(mib(with_rules.0)),
        ]],
    });
    // Pods (their namespaces) go first, then the daemon, then the node.
    drop(pods);
    drop(d);
    drop(node);
    Ok(())
}
