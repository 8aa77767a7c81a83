//! CNI ADD and DEL latency: the sluice plugin (with its daemon), bridge + host-local, and the
//! `loopback` plugin (the floor: what exec'ing any plugin costs). Sequential pods are
//! interleaved pod by pod (each pod's turn rotates which plugin goes first), so the machine's
//! drift hits every plugin alike; then a wall time for 100 pods with 10 ADDs in flight.
//!
//! Only the plugin's run is timed (spawn to exit, as a runtime sees it); the pod's namespace
//! is created beforehand and deleted afterwards.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use anyhow::{Context, Result};

use super::{
    Config,
    cni::{Plugin, Pod},
    netns::{self, Netns},
    report::{Report, Section, fmt_num, fmt_ratio},
    stats,
};

#[derive(Default)]
struct Latency {
    add_ms: Vec<f64>,
    del_ms: Vec<f64>,
    /// One wall time per repetition.
    conc_add_s: Vec<f64>,
    conc_del_s: Vec<f64>,
}

/// Create `n` namespaces, a few at a time (`ip netns add` is a process each).
pub fn namespaces(n: usize) -> Result<Vec<Netns>> {
    let out: Mutex<Vec<Netns>> = Mutex::new(Vec::with_capacity(n));
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    while next.fetch_add(1, Ordering::Relaxed) < n {
                        let ns = Netns::new("pod")?;
                        out.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.push(ns);
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a namespace worker panicked"))??;
        }
        Ok(())
    })?;
    out.into_inner().map_err(|_| anyhow::anyhow!("poisoned"))
}

/// ADD a pod into each namespace with `concurrency` ADDs in flight; returns the pods and
/// the wall time.
pub fn add_concurrently(
    plugin: &Plugin,
    nss: Vec<Netns>,
    concurrency: usize,
    name: &str,
) -> Result<(Vec<Pod>, f64)> {
    let queue: Mutex<Vec<(usize, Netns)>> = Mutex::new(nss.into_iter().enumerate().collect());
    let pods: Mutex<Vec<Pod>> = Mutex::new(Vec::new());
    let start = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    loop {
                        let item = queue.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.pop();
                        let Some((i, ns)) = item else { return Ok(()) };
                        let pod = Pod::add_in(plugin, ns, &format!("{name}{i}"))?;
                        pods.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.push(pod);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("an ADD worker panicked"))??;
        }
        Ok(())
    })?;
    let wall = start.elapsed().as_secs_f64();
    Ok((pods.into_inner().map_err(|_| anyhow::anyhow!("poisoned"))?, wall))
}

fn del_concurrently(plugin: &Plugin, pods: &[Pod], concurrency: usize) -> Result<f64> {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(p) = pods.get(i) else { return Ok(()) };
                        p.del(plugin)?;
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| anyhow::anyhow!("a DEL worker panicked"))??;
        }
        Ok(())
    })?;
    Ok(start.elapsed().as_secs_f64())
}

pub fn run(cfg: &Config, plugins: &[Plugin], rep: &mut Report) -> Result<()> {
    let mut lat: BTreeMap<&'static str, Latency> = BTreeMap::new();
    // Warm-up: the first exec of each binary pays page-cache misses.
    for p in plugins {
        let pod = Pod::add(p, "warmup").with_context(|| format!("{} warm-up ADD", p.label))?;
        pod.del(p)?;
    }
    let mut pods: Vec<(usize, Pod)> = Vec::new();
    for i in 0..cfg.cni_pods {
        netns::check_interrupted()?;
        let mut order: Vec<usize> = (0..plugins.len()).collect();
        order.rotate_left(i % plugins.len());
        for pi in order {
            let p = &plugins[pi];
            let pod = Pod::add(p, &format!("seq{i}"))?;
            lat.entry(p.label)
                .or_default()
                .add_ms
                .push(pod.add_time.as_secs_f64() * 1e3);
            pods.push((pi, pod));
        }
    }
    // DEL in the same interleaved order as the ADDs.
    for (pi, pod) in &pods {
        let p = &plugins[*pi];
        let t = pod.del(p)?;
        lat.entry(p.label).or_default().del_ms.push(t.as_secs_f64() * 1e3);
    }
    drop(pods);
    eprintln!("bench: CNI sequential ADD/DEL done; concurrent ADDs next");
    // Repetitions, plugins interleaved: a single wall time is at the mercy of the machine.
    for rep_i in 0..cfg.conc_reps {
        for p in plugins {
            netns::check_interrupted()?;
            let nss = namespaces(cfg.conc_pods)?;
            let (pods, wall) = add_concurrently(p, nss, cfg.concurrency, "conc")?;
            let each: Vec<f64> = pods.iter().map(|p| p.add_time.as_secs_f64() * 1e3).collect();
            eprintln!(
                "bench: {} {} ADDs, {} in flight (repetition {}): {wall:.2}s (each: p50 {:.1} ms, max {:.1} ms)",
                p.label,
                pods.len(),
                cfg.concurrency,
                rep_i + 1,
                stats::median(&each),
                stats::percentile(&each, 1.0)
            );
            let del = del_concurrently(p, &pods, cfg.concurrency)?;
            let l = lat.entry(p.label).or_default();
            l.conc_add_s.push(wall);
            l.conc_del_s.push(del);
        }
    }

    let mut rows = Vec::new();
    for p in plugins {
        let l = &lat[p.label];
        let (a50, a99) = (stats::median(&l.add_ms), stats::percentile(&l.add_ms, 0.99));
        let (d50, d99) = (stats::median(&l.del_ms), stats::percentile(&l.del_ms, 0.99));
        let suffix = if p.label == "sluice" {
            String::new()
        } else {
            format!("_{}", p.label)
        };
        rep.num(&format!("add_p50_ms{suffix}"), a50);
        rep.num(&format!("add_p99_ms{suffix}"), a99);
        rep.num(&format!("del_p50_ms{suffix}"), d50);
        rep.num(&format!("del_p99_ms{suffix}"), d99);
        let (cadd, cdel) = (stats::median(&l.conc_add_s), stats::median(&l.conc_del_s));
        rep.num(&format!("add_conc{}_wall_s{suffix}", cfg.conc_pods), cadd);
        rep.num(&format!("del_conc{}_wall_s{suffix}", cfg.conc_pods), cdel);
        rows.push(vec![
            p.label.to_owned(),
            fmt_num(a50),
            fmt_num(a99),
            fmt_num(d50),
            fmt_num(d99),
            fmt_num(cadd),
            fmt_num(cdel),
        ]);
    }
    let ratio = |a: &str, b: &str| stats::median(&lat[a].add_ms) / stats::median(&lat[b].add_ms);
    rep.num("add_p50_vs_loopback", ratio("sluice", "loopback"));
    rep.num("add_p50_vs_bridge", ratio("sluice", "bridge"));
    rep.num("add_p50_bridge_vs_loopback", ratio("bridge", "loopback"));
    rep.sections.push(Section {
        title: format!(
            "CNI latency ({} pods per plugin sequentially, interleaved; {} pods with {} in flight, median of {})",
            cfg.cni_pods, cfg.conc_pods, cfg.concurrency, cfg.conc_reps
        ),
        note: format!(
            "sluice ADD p50 = {} x the loopback plugin, {} x bridge+host-local.",
            fmt_ratio(ratio("sluice", "loopback")),
            fmt_ratio(ratio("sluice", "bridge"))
        ),
        header: [
            "plugin",
            "ADD p50 ms",
            "ADD p99 ms",
            "DEL p50 ms",
            "DEL p99 ms",
            "concurrent ADD wall s",
            "concurrent DEL wall s",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    });
    Ok(())
}
