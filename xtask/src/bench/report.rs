//! The bench's output: tables on the terminal, `target/bench/report.md`,
//! `target/bench/latest.json` (flat keys, numbers) and `target/bench/report.svg` (each
//! traffic figure as a ratio to the veth pair, drawn with plotters' SVG backend).

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use anyhow::{Context, Result};
use plotters::prelude::*;
use serde_json::Value;

/// One table.
pub struct Section {
    pub title: String,
    pub note: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

#[derive(Default)]
pub struct Report {
    pub json: BTreeMap<String, Value>,
    pub sections: Vec<Section>,
    /// (figure, topology, ratio to veth) for the chart.
    pub chart: Vec<(String, String, f64)>,
    /// Targets: (what, measured, target, met; None when not measured in this run).
    pub targets: Vec<(String, String, String, Option<bool>)>,
}

pub fn fmt_ratio(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}")
    } else {
        "-".into()
    }
}

/// `median (min-max)` of per-round ratios; just the median when the rounds agree exactly.
pub fn fmt_ratio_range(median: f64, (lo, hi): (f64, f64)) -> String {
    if !lo.is_finite() || (hi - lo).abs() < 0.005 {
        fmt_ratio(median)
    } else {
        format!("{} ({}-{})", fmt_ratio(median), fmt_ratio(lo), fmt_ratio(hi))
    }
}

/// Three significant figures or so, without scientific notation.
pub fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        "-".into()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

impl Report {
    /// A number key (NaN, i.e. not measured, is written as null).
    pub fn num(&mut self, key: &str, x: f64) {
        let v = if x.is_finite() {
            // Keep the JSON readable: 4 significant decimals are plenty for these figures.
            Value::from((x * 1e4).round() / 1e4)
        } else {
            Value::Null
        };
        self.json.insert(key.to_owned(), v);
    }

    pub fn text(&mut self, key: &str, s: &str) {
        self.json.insert(key.to_owned(), Value::from(s));
    }

    pub fn get(&self, key: &str) -> f64 {
        self.json.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN)
    }

    /// Record a project target: `ok(measured)` decides whether it is met.
    pub fn target(&mut self, what: &str, key: &str, target: &str, ok: impl Fn(f64) -> bool) {
        let x = self.get(key);
        let met = x.is_finite().then(|| ok(x));
        self.targets
            .push((what.to_owned(), fmt_num(x), target.to_owned(), met));
    }

    fn tables(&self, md: bool) -> String {
        let mut out = String::new();
        for s in &self.sections {
            if md {
                let _ = writeln!(out, "### {}\n", s.title);
                if !s.note.is_empty() {
                    let _ = writeln!(out, "{}\n", s.note);
                }
                let _ = writeln!(out, "| {} |", s.header.join(" | "));
                let _ = writeln!(out, "|{}", "---|".repeat(s.header.len()));
                for r in &s.rows {
                    let _ = writeln!(out, "| {} |", r.join(" | "));
                }
                out.push('\n');
            } else {
                let _ = writeln!(out, "\n== {}", s.title);
                if !s.note.is_empty() {
                    let _ = writeln!(out, "   {}", s.note);
                }
                let mut widths: Vec<usize> = s.header.iter().map(|h| h.chars().count()).collect();
                for r in &s.rows {
                    for (i, c) in r.iter().enumerate() {
                        if i < widths.len() {
                            widths[i] = widths[i].max(c.chars().count());
                        }
                    }
                }
                let line = |cells: &[String]| -> String {
                    let mut l = String::from(" ");
                    for (i, c) in cells.iter().enumerate() {
                        let w = widths.get(i).copied().unwrap_or(0);
                        let pad = w.saturating_sub(c.chars().count());
                        if i == 0 {
                            let _ = write!(l, " {c}{}", " ".repeat(pad));
                        } else {
                            let _ = write!(l, "  {}{c}", " ".repeat(pad));
                        }
                    }
                    l
                };
                let _ = writeln!(out, "{}", line(&s.header));
                for r in &s.rows {
                    let _ = writeln!(out, "{}", line(r));
                }
            }
        }
        out
    }

    fn targets_table(&self, md: bool) -> String {
        let mut out = String::new();
        if md {
            out.push_str("### Targets\n\n| target | measured | aim | met |\n|---|---|---|---|\n");
            for (w, m, t, ok) in &self.targets {
                let _ = writeln!(out, "| {w} | {m} | {t} | {} |", met_word(*ok, "yes", "no"));
            }
        } else {
            out.push_str("\n== Targets\n");
            for (w, m, t, ok) in &self.targets {
                let _ = writeln!(
                    out,
                    "   {w:<44} {m:>8}  aim {t:<7}  {}",
                    met_word(*ok, "met", "NOT met")
                );
            }
        }
        out
    }

    pub fn terminal(&self) -> String {
        let mut s = self.tables(false);
        s.push_str(&self.targets_table(false));
        s
    }

    pub fn markdown(&self, header: &str) -> String {
        let mut s = format!("# sluice benchmark\n\n{header}\n\n![ratios to the veth pair](report.svg)\n\n");
        s.push_str(&self.targets_table(true));
        s.push('\n');
        s.push_str(&self.tables(true));
        s
    }

    /// Write report.md, latest.json and report.svg into `dir`.
    pub fn write(&self, dir: &Path, header: &str) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("report.md"), self.markdown(header))?;
        std::fs::write(
            dir.join("latest.json"),
            serde_json::to_string_pretty(&self.json)? + "\n",
        )?;
        self.svg(&dir.join("report.svg"))?;
        Ok(())
    }

    /// Grouped bars: one group per figure, one bar per topology, height = ratio to veth.
    fn svg(&self, path: &Path) -> Result<()> {
        let mut figures: Vec<&str> = Vec::new();
        let mut topos: Vec<&str> = Vec::new();
        for (f, t, _) in &self.chart {
            if !figures.contains(&f.as_str()) {
                figures.push(f);
            }
            if !topos.contains(&t.as_str()) {
                topos.push(t);
            }
        }
        let ymax = self
            .chart
            .iter()
            .map(|c| c.2)
            .filter(|x| x.is_finite())
            .fold(1.2f64, f64::max)
            // Head room for the legend above the bars.
            * 1.35;
        let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
        let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
            root.fill(&WHITE)?;
            let n = figures.len().max(1);
            let mut chart = ChartBuilder::on(&root)
                .caption(
                    "sluice bench: pod-to-pod figures as a ratio to a veth pair",
                    ("sans-serif", 20),
                )
                .margin(15)
                .x_label_area_size(35)
                .y_label_area_size(50)
                .build_cartesian_2d(0f64..n as f64, 0f64..ymax)?;
            let names = figures.clone();
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(n * 2 + 1)
                .x_label_formatter(&|x| {
                    // Label at the middle of each group only.
                    let i = x.floor() as usize;
                    if (x - i as f64 - 0.5).abs() < 1e-6 {
                        names.get(i).map(|s| s.to_string()).unwrap_or_default()
                    } else {
                        String::new()
                    }
                })
                .y_desc("ratio to veth (higher is better)")
                .draw()?;
            let palette = [&BLUE, &RED, &GREEN, &MAGENTA, &CYAN, &BLACK];
            let width = 0.8 / topos.len().max(1) as f64;
            for (ti, t) in topos.iter().enumerate() {
                let color = palette[ti % palette.len()];
                let bars: Vec<Rectangle<(f64, f64)>> = self
                    .chart
                    .iter()
                    .filter(|c| c.1 == *t && c.2.is_finite())
                    .filter_map(|c| {
                        let fi = figures.iter().position(|f| *f == c.0)?;
                        let x0 = fi as f64 + 0.1 + ti as f64 * width;
                        Some(Rectangle::new(
                            [(x0, 0.0), (x0 + width * 0.9, c.2)],
                            color.filled(),
                        ))
                    })
                    .collect();
                chart
                    .draw_series(bars)?
                    .label(t.to_string())
                    .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
            }
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(0.0, 1.0), (n as f64, 1.0)],
                BLACK.stroke_width(1),
            )))?;
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperRight)
                .draw()?;
            root.present()?;
            Ok(())
        };
        draw().map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))
    }
}

fn met_word(ok: Option<bool>, yes: &'static str, no: &'static str) -> &'static str {
    match ok {
        Some(true) => yes,
        Some(false) => no,
        None => "not measured",
    }
}
