//! Latency reports from HDR histograms, for loadgen runs, `rockfeed run
//! --report` and `rockfeed demo`:
//!
//! - a percentile table (count, p50/p90/p99/p99.9/max) for stdout and
//!   `summary.txt`;
//! - `report.json`: the same numbers per series plus the run's facts;
//! - `<series>.hgrm`: HdrHistogram's percentile-distribution text (the
//!   format of `outputPercentileDistribution`, five ticks per half distance,
//!   values in milliseconds), which HdrHistogram's plotter reads;
//! - `latency.svg`: the percentile curves of every series on one chart, the
//!   x axis in "nines" (log scale of 1/(1−p)), y in milliseconds.
//!
//! Histograms hold microseconds; everything shown is in milliseconds.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use serde_json::{Value as J, json};

/// One named latency distribution, in microseconds.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub hist: Histogram<u64>,
}

/// A report: a title, series and facts (counters, settings).
#[derive(Debug, Clone)]
pub struct Report {
    pub title: String,
    pub series: Vec<Series>,
    pub facts: serde_json::Map<String, J>,
}

const US_PER_MS: f64 = 1000.0;
const QUANTILES: [(&str, f64); 4] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)];

fn ms(us: u64) -> f64 {
    us as f64 / US_PER_MS
}

impl Report {
    pub fn new(title: &str) -> Self {
        Report { title: title.into(), series: Vec::new(), facts: serde_json::Map::new() }
    }

    /// Adds a series (empty ones are kept: they show a stage saw nothing).
    pub fn series(&mut self, name: &str, hist: Histogram<u64>) -> &mut Self {
        self.series.push(Series { name: name.into(), hist });
        self
    }

    pub fn fact(&mut self, key: &str, v: impl Into<J>) -> &mut Self {
        self.facts.insert(key.into(), v.into());
        self
    }

    /// The percentile table.
    pub fn table(&self) -> String {
        let w = self.series.iter().map(|s| s.name.len()).max().unwrap_or(6).max(6);
        let mut out = format!("{:w$}  {:>10}", "stage (ms)", "count");
        for (n, _) in QUANTILES {
            let _ = write!(out, "  {n:>9}");
        }
        out.push_str("        max\n");
        for s in &self.series {
            let _ = write!(out, "{:w$}  {:>10}", s.name, s.hist.len());
            if s.hist.is_empty() {
                out.push_str(&format!("  {:>9}", "-").repeat(QUANTILES.len() + 1));
            } else {
                for (_, q) in QUANTILES {
                    let _ = write!(out, "  {:>9.3}", ms(s.hist.value_at_quantile(q)));
                }
                let _ = write!(out, "  {:>9.3}", ms(s.hist.max()));
            }
            out.push('\n');
        }
        out
    }

    /// The JSON document.
    pub fn json(&self) -> J {
        let series: Vec<J> = self
            .series
            .iter()
            .map(|s| {
                let h = &s.hist;
                let mut o = json!({"name": s.name, "unit": "ms", "count": h.len()});
                if !h.is_empty() {
                    o["min"] = json!(ms(h.min()));
                    o["mean"] = json!(h.mean() / US_PER_MS);
                    for (n, q) in QUANTILES {
                        o[n] = json!(ms(h.value_at_quantile(q)));
                    }
                    o["max"] = json!(ms(h.max()));
                }
                o
            })
            .collect();
        json!({"title": self.title, "series": series, "facts": self.facts})
    }

    /// Writes `summary.txt`, `report.json`, one `.hgrm` per series and
    /// `latency.svg` into `dir`; returns the paths.
    pub fn write(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut written = Vec::new();
        let mut put = |name: &str, text: String| -> std::io::Result<()> {
            let p = dir.join(name);
            std::fs::write(&p, text)?;
            written.push(p);
            Ok(())
        };
        put("summary.txt", format!("{}\n\n{}", self.title, self.table()))?;
        put("report.json", serde_json::to_string_pretty(&self.json()).map_err(std::io::Error::other)?)?;
        for s in &self.series {
            put(&format!("{}.hgrm", file_name(&s.name)), hgrm(&s.hist))?;
        }
        put("latency.svg", svg(&self.title, &self.series))?;
        Ok(written)
    }
}

fn file_name(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// HdrHistogram's percentile distribution text, values in ms.
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut out = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    if !h.is_empty() {
        let mut total = 0u64;
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            let value = ms(v.value_iterated_to());
            if q < 1.0 {
                let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10} {:14.2}", 1.0 / (1.0 - q));
            } else {
                let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10}");
            }
        }
    }
    let (mean, sd, max) =
        if h.is_empty() { (0.0, 0.0, 0.0) } else { (h.mean() / US_PER_MS, h.stdev() / US_PER_MS, ms(h.max())) };
    let _ = writeln!(out, "#[Mean    = {mean:12.3}, StdDeviation   = {sd:12.3}]");
    let _ = writeln!(out, "#[Max     = {max:12.3}, Total count    = {:12}]", h.len());
    let _ = writeln!(out, "#[Buckets = {:12}, SubBuckets     = {:12}]", h.buckets(), h.distinct_values());
    out
}

const COLORS: [&str; 12] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f",
    "#393b79", "#ad494a",
];
const DASHES: [&str; 3] = ["", "6,3", "2,2"];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The percentile curves of `series` as an SVG document: x in "nines"
/// (log of 1/(1−p)), y on a log scale of milliseconds (stages range from
/// microseconds to seconds), the legend beside the plot.
pub fn svg(title: &str, series: &[Series]) -> String {
    let (w, h, left, top, bottom) = (1200.0, 560.0, 80.0, 50.0, 60.0);
    let (pw, ph) = (800.0, h - top - bottom);
    let count = series.iter().map(|s| s.hist.len()).max().unwrap_or(0).max(10);
    // Nines shown: enough for the largest series (1/(1-p) up to its count), 2..5.
    let nines = ((count as f64).log10().ceil()).clamp(2.0, 5.0);
    let with_data = || series.iter().filter(|s| !s.hist.is_empty());
    // Decades of the y axis: from below the smallest non-zero value to above the largest.
    let hi_ms = with_data().map(|s| ms(s.hist.max())).fold(0.0, f64::max).max(0.01);
    let lo_ms = with_data().map(|s| ms(s.hist.min_nz().max(1))).fold(f64::INFINITY, f64::min).min(hi_ms);
    let (d_lo, d_hi) =
        (lo_ms.log10().floor().max(-3.0), (hi_ms.log10() + 1e-9).ceil().max(lo_ms.log10().floor() + 1.0));
    let x = |q: f64| left + pw * ((1.0 / (1.0 - q.min(1.0 - 10f64.powf(-nines)))).log10() / nines);
    // Zero (and anything under the floor) sits on the bottom axis.
    let y = |v_ms: f64| top + ph * (1.0 - ((v_ms.max(10f64.powf(d_lo)).log10() - d_lo) / (d_hi - d_lo)));
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="28" font-size="16" text-anchor="middle">{}</text>"#,
        left + pw / 2.0,
        escape(title)
    );
    // Grid and axes.
    for d in d_lo as i32..=d_hi as i32 {
        let v = 10f64.powi(d);
        let yy = y(v);
        let _ = writeln!(out, r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/>"##, left + pw);
        let _ =
            writeln!(out, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#, left - 6.0, yy + 4.0, fmt_ms(v));
    }
    for n in 0..=nines as u32 {
        let q = 1.0 - 10f64.powi(-(n as i32));
        let xx = left + pw * (n as f64 / nines);
        let label = if n == 0 { "0%".to_string() } else { format!("{}%", trim_float(q * 100.0)) };
        let _ = writeln!(out, r##"<line x1="{xx:.1}" y1="{top}" x2="{xx:.1}" y2="{:.1}" stroke="#ddd"/>"##, top + ph);
        let _ = writeln!(out, r#"<text x="{xx:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#, top + ph + 18.0);
    }
    let _ = writeln!(
        out,
        r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>
<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>
<text transform="translate(18,{:.1}) rotate(-90)" text-anchor="middle">latency (ms, log scale)</text>"##,
        left + pw / 2.0,
        h - 15.0,
        top + ph / 2.0
    );
    // Curves and the legend to the right of the plot.
    let lx = left + pw + 20.0;
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let dash = DASHES[(i / COLORS.len()) % DASHES.len()];
        let dash_attr = if dash.is_empty() { String::new() } else { format!(r#" stroke-dasharray="{dash}""#) };
        let ly = top + 8.0 + 20.0 * i as f64;
        let label = if s.hist.is_empty() {
            format!("{} (no data)", s.name)
        } else {
            format!("{} p99 {} ms", s.name, fmt_ms(ms(s.hist.value_at_quantile(0.99))))
        };
        let _ = writeln!(
            out,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="3"{dash_attr}/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0,
            escape(&label)
        );
        if s.hist.is_empty() {
            continue;
        }
        let mut pts = String::new();
        let mut prev_y: Option<f64> = None;
        for v in s.hist.iter_quantiles(5) {
            let (px, py) = (x(v.quantile_iterated_to()), y(ms(v.value_iterated_to())));
            // A step curve: hold the previous value up to this percentile.
            if let Some(p) = prev_y {
                let _ = write!(pts, "{px:.1},{p:.1} ");
            }
            let _ = write!(pts, "{px:.1},{py:.1} ");
            prev_y = Some(py);
        }
        let _ = writeln!(
            out,
            r#"<polyline class="series" data-series="{}" fill="none" stroke="{color}" stroke-width="2"{dash_attr} points="{}"/>"#,
            escape(&s.name),
            pts.trim_end()
        );
    }
    out.push_str("</svg>\n");
    out
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.5}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn fmt_ms(v: f64) -> String {
    if v >= 100.0 { format!("{v:.0}") } else { trim_float(v) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values_us: impl IntoIterator<Item = u64>) -> Histogram<u64> {
        let mut h = Histogram::new(3).unwrap();
        for v in values_us {
            h.record(v).unwrap();
        }
        h
    }

    fn sample_report() -> Report {
        let mut r = Report::new("test run");
        r.series("received_to_committed", hist((1..=10_000).map(|i| i * 100)));
        r.series("queue_wait", hist([50, 60, 70]));
        r.series("never_used", Histogram::new(3).unwrap());
        r.fact("readings", 12345u64);
        r
    }

    #[test]
    fn the_table_shows_percentiles_in_milliseconds() {
        let t = sample_report().table();
        let line = t.lines().find(|l| l.starts_with("received_to_committed")).unwrap();
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[1], "10000");
        let p50: f64 = cols[2].parse().unwrap();
        assert!((p50 - 500.0).abs() < 1.0, "{line}");
        let max: f64 = cols[6].parse().unwrap();
        assert!((max - 1000.0).abs() < 1.0, "{line}");
        assert!(t.lines().any(|l| l.starts_with("never_used") && l.contains('-')));
    }

    #[test]
    fn hgrm_follows_the_hdrhistogram_percentile_distribution_format() {
        let h = hist((1..=1000).map(|i| i * 1000));
        let text = hgrm(&h);
        let mut lines = text.lines();
        assert_eq!(lines.next().unwrap(), "       Value     Percentile TotalCount 1/(1-Percentile)");
        assert_eq!(lines.next().unwrap(), "");
        let rows: Vec<Vec<&str>> =
            text.lines().skip(2).take_while(|l| !l.starts_with('#')).map(|l| l.split_whitespace().collect()).collect();
        assert!(rows.len() > 20);
        assert!(rows[..rows.len() - 1].iter().all(|r| r.len() == 4));
        assert_eq!(rows.last().unwrap().len(), 3, "the 100% line has no 1/(1-p) column");
        assert_eq!(rows.last().unwrap()[2], "1000");
        let pct: Vec<f64> = rows.iter().map(|r| r[1].parse().unwrap()).collect();
        assert!(pct.windows(2).all(|w| w[0] <= w[1]) && *pct.last().unwrap() == 1.0);
        assert!(text.contains("#[Max     =     1000.447, Total count    =         1000]"), "{text}");
    }

    #[test]
    fn the_svg_has_one_curve_per_series_with_data_and_a_legend_for_all() {
        let svg = svg("t <1>", &sample_report().series);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains(r#"data-series="received_to_committed""#));
        assert!(svg.contains(r#"data-series="queue_wait""#));
        assert!(!svg.contains(r#"data-series="never_used""#));
        assert!(svg.contains("never_used (no data)"));
        assert!(svg.contains("t &lt;1&gt;"), "the title is escaped");
        assert!(svg.contains(">99.9%<"), "10,000 readings show four nines of percentiles");
        // Curves stay inside the plot area.
        for pts in svg.split("points=\"").skip(1) {
            for p in pts.split('"').next().unwrap().split(' ') {
                let (x, y) = p.split_once(',').unwrap();
                let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                assert!((80.0..=880.1).contains(&x) && (50.0..=500.1).contains(&y), "{p}");
            }
        }
    }

    #[test]
    fn writing_a_report_makes_every_file() {
        let dir = std::env::temp_dir().join(format!("loadgen-report-{}", std::process::id()));
        let files = sample_report().write(&dir).unwrap();
        let names: Vec<String> = files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into()).collect();
        for n in ["summary.txt", "report.json", "received_to_committed.hgrm", "queue_wait.hgrm", "latency.svg"] {
            assert!(names.iter().any(|x| x == n), "{n} in {names:?}");
        }
        let j: J = serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
        assert_eq!(j["facts"]["readings"], 12345);
        assert_eq!(j["series"][1]["count"], 3);
        assert_eq!(j["series"][1]["max"], 0.07);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
