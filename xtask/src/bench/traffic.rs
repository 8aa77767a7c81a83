//! Same-node pod-to-pod traffic through every topology, interleaved: each round measures one
//! figure on the veth reference first and then on the others (in an order that rotates from
//! round to round), so every value has a reference taken seconds before with the same command.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use super::{
    Config,
    measure::{self, RrStats},
    netns,
    report::{Report, Section, fmt_num, fmt_ratio_range},
    stats,
    topology::Topo,
};

/// One round's figures of one topology.
#[derive(Clone, Copy, Debug, Default)]
struct Values {
    stream1: f64,
    stream4: f64,
    rr: RrStats,
    crr: f64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Figure {
    Stream1,
    Stream4,
    Rr,
    Crr,
}

const FIGURES: [Figure; 4] = [Figure::Stream1, Figure::Stream4, Figure::Rr, Figure::Crr];

/// What one round measured, per topology label.
pub struct Traffic {
    rounds: Vec<BTreeMap<&'static str, Values>>,
    labels: Vec<&'static str>,
}

fn measure_one(cfg: &Config, t: &Topo, f: Figure, v: &mut Values) -> Result<()> {
    match f {
        Figure::Stream1 => v.stream1 = measure::iperf3(&t.client, t.server_ip, cfg.stream_secs, 1)?,
        Figure::Stream4 => v.stream4 = measure::iperf3(&t.client, t.server_ip, cfg.stream_secs, 4)?,
        Figure::Rr if t.server_ip.is_ipv6() => {
            // sockperf 3.7 (Debian 12) has no IPv6: the Rust ping-pong loop, same 64 B.
            v.rr = measure::tcp_rr(
                &t.client,
                t.server_ip,
                std::time::Duration::from_secs(u64::from(cfg.sockperf_secs)),
            )?
        }
        Figure::Rr => v.rr = measure::sockperf(&t.client, t.server_ip, cfg.sockperf_secs)?,
        Figure::Crr => v.crr = measure::tcp_crr(&t.client, t.server_ip, cfg.crr)?,
    }
    Ok(())
}

/// Run the rounds. `topos[0]` is the reference (veth).
pub fn run(cfg: &Config, topos: &[Topo]) -> Result<Traffic> {
    run_figures(cfg, topos, &FIGURES, cfg.rounds)
}

/// Run the rounds of `figures` only. `topos[0]` is the reference every other is divided by.
pub fn run_figures(cfg: &Config, topos: &[Topo], figures: &[Figure], n_rounds: usize) -> Result<Traffic> {
    let labels: Vec<&'static str> = topos.iter().map(|t| t.label).collect();
    let mut rounds = Vec::new();
    for r in 0..n_rounds {
        let mut round: BTreeMap<&'static str, Values> = BTreeMap::new();
        for &f in figures {
            let mut order: Vec<&Topo> = topos[1..].iter().collect();
            let k = r % order.len().max(1);
            order.rotate_left(k);
            order.insert(0, &topos[0]);
            for t in order {
                netns::check_interrupted()?;
                let v = round.entry(t.label).or_default();
                measure_one(cfg, t, f, v).with_context(|| format!("{} {f:?}", t.label))?;
            }
        }
        let reference = &round[topos[0].label];
        let progress: Vec<String> = topos[1..]
            .iter()
            .filter_map(|t| round.get(t.label).map(|v| (t.label, v)))
            .map(|(l, v)| {
                let parts: Vec<String> = figures
                    .iter()
                    .map(|f| {
                        let (name, x, r) = match f {
                            Figure::Stream1 => ("stream1", v.stream1, reference.stream1),
                            Figure::Stream4 => ("stream4", v.stream4, reference.stream4),
                            Figure::Rr => ("rr", v.rr.per_s, reference.rr.per_s),
                            Figure::Crr => ("crr", v.crr, reference.crr),
                        };
                        format!("{name} {:.2}", x / r)
                    })
                    .collect();
                format!("{l}/{}: {}", topos[0].label, parts.join(" "))
            })
            .collect();
        eprintln!(
            "bench: traffic round {}/{}: {}",
            r + 1,
            n_rounds,
            progress.join("; ")
        );
        rounds.push(round);
    }
    Ok(Traffic { rounds, labels })
}

impl Traffic {
    fn series(&self, label: &str, f: impl Fn(&Values) -> f64) -> Vec<f64> {
        self.rounds
            .iter()
            .map(|r| r.get(label).map(&f).unwrap_or(f64::NAN))
            .collect()
    }

    /// Median over rounds of `label`'s figure divided by `reference`'s.
    fn ratio(&self, label: &str, reference: &str, f: impl Fn(&Values) -> f64 + Copy) -> f64 {
        stats::median_ratio(&self.series(label, f), &self.series(reference, f))
    }

    fn range(&self, label: &str, reference: &str, f: impl Fn(&Values) -> f64 + Copy) -> (f64, f64) {
        stats::ratio_range(&self.series(label, f), &self.series(reference, f))
    }

    fn abs(&self, label: &str, f: impl Fn(&Values) -> f64) -> f64 {
        stats::median(&self.series(label, f))
    }

    /// RR and 1-flow stream of each `(label, key)` against this run's reference (`topos[0]`
    /// of `run_figures`): JSON keys `{key}_rr_vs_{reference}` and `{key}_stream1_vs_...`,
    /// absolute figures, and one table.
    pub fn report_pairs(&self, rep: &mut Report, title: &str, note: &str, rows: &[(&str, &str)]) {
        let Some(reference) = self.labels.first().copied() else {
            return;
        };
        let rr = |v: &Values| v.rr.per_s;
        let st = |v: &Values| v.stream1;
        let mut table = Vec::new();
        for &(label, key) in rows {
            let (rr_ratio, st_ratio) = (self.ratio(label, reference, rr), self.ratio(label, reference, st));
            rep.num(&format!("{key}_rr_vs_{reference}"), rr_ratio);
            rep.num(&format!("{key}_stream1_vs_{reference}"), st_ratio);
            rep.num(&format!("{key}_rr_per_s"), self.abs(label, rr));
            rep.num(&format!("{key}_stream1_gbps"), self.abs(label, st));
            rep.num(&format!("{key}_rr_p50_us"), self.abs(label, |v| v.rr.p50_us));
            table.push(vec![
                label.to_owned(),
                fmt_ratio_range(rr_ratio, self.range(label, reference, rr)),
                fmt_ratio_range(st_ratio, self.range(label, reference, st)),
                fmt_num(self.abs(label, rr)),
                fmt_num(self.abs(label, st)),
                fmt_num(self.abs(label, |v| v.rr.p50_us)),
            ]);
            rep.chart.push(("RR".into(), key.to_owned(), rr_ratio));
            rep.chart.push(("stream 1".into(), key.to_owned(), st_ratio));
        }
        table.push(vec![
            format!("{reference} (reference)"),
            "1.00".into(),
            "1.00".into(),
            fmt_num(self.abs(reference, rr)),
            fmt_num(self.abs(reference, st)),
            fmt_num(self.abs(reference, |v| v.rr.p50_us)),
        ]);
        rep.sections.push(Section {
            title: title.to_owned(),
            note: format!("{} rounds, interleaved. {note}", self.rounds.len()),
            header: [
                "topology",
                &format!("RR vs {reference}"),
                &format!("stream 1 flow vs {reference}"),
                "RR (transactions/s)",
                "stream (Gbit/s)",
                "RR p50 (µs)",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            rows: table,
        });
    }

    /// JSON keys and the report's tables.
    pub fn report(&self, rep: &mut Report) {
        type Getter = fn(&Values) -> f64;
        let figs: [(&str, &str, Getter); 6] = [
            ("stream1", "TCP stream, 1 flow (Gbit/s)", |v| v.stream1),
            ("stream4", "TCP stream, 4 flows (Gbit/s)", |v| v.stream4),
            ("rr", "TCP RR 64 B, sockperf (transactions/s)", |v| v.rr.per_s),
            ("rr_p50", "RR round trip p50 (µs)", |v| v.rr.p50_us),
            ("rr_p99", "RR round trip p99 (µs)", |v| v.rr.p99_us),
            ("crr", "TCP CRR (connections/s)", |v| v.crr),
        ];
        let mut ratio_rows = Vec::new();
        let mut abs_rows = Vec::new();
        for (key, title, f) in figs {
            let mut rr = vec![title.to_owned()];
            let mut ar = vec![title.to_owned()];
            for l in &self.labels {
                let ratio = self.ratio(l, "veth", f);
                let abs = self.abs(l, f);
                rr.push(fmt_ratio_range(ratio, self.range(l, "veth", f)));
                ar.push(fmt_num(abs));
                rep.num(&format!("{key}_{l}_vs_veth"), ratio);
                let unit = match key {
                    "stream1" | "stream4" => "gbps",
                    "rr" | "crr" => "per_s",
                    _ => "us",
                };
                rep.num(&format!("{key}_{l}_{unit}"), abs);
            }
            ratio_rows.push(rr);
            abs_rows.push(ar);
        }
        // The headline keys: sluice against the references.
        for (key, f) in [
            ("rr", (|v: &Values| v.rr.per_s) as Getter),
            ("stream1", |v| v.stream1),
            ("stream4", |v| v.stream4),
            ("crr", |v| v.crr),
        ] {
            rep.num(&format!("{key}_vs_veth"), self.ratio("sluice", "veth", f));
            rep.num(&format!("{key}_vs_bridge"), self.ratio("sluice", "bridge", f));
        }
        rep.num("rr_p50_us", self.abs("sluice", |v| v.rr.p50_us));
        rep.num("rr_p99_us", self.abs("sluice", |v| v.rr.p99_us));
        let mut header = vec!["figure".to_owned()];
        header.extend(self.labels.iter().map(|l| l.to_string()));
        rep.sections.push(Section {
            title: "Pod-to-pod traffic, ratio to the veth pair (median of per-round ratios, min-max)".into(),
            note: format!(
                "{} rounds, interleaved; >1 is better for rates, <1 is better for latencies. The range \
                 shows how far single rounds strayed (a busy machine widens it).",
                self.rounds.len()
            ),
            header: header.clone(),
            rows: ratio_rows,
        });
        rep.sections.push(Section {
            title: "Pod-to-pod traffic, absolute (median over rounds; drifts between runs)".into(),
            note: String::new(),
            header,
            rows: abs_rows,
        });
        // For the chart: rates only, each topology against veth.
        for l in &self.labels {
            for (name, f) in [
                ("stream 1", (|v: &Values| v.stream1) as Getter),
                ("stream 4", |v| v.stream4),
                ("RR", |v| v.rr.per_s),
                ("CRR", |v| v.crr),
            ] {
                rep.chart
                    .push((name.to_owned(), l.to_string(), self.ratio(l, "veth", f)));
            }
        }
    }
}
