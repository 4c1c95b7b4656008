//! `predictivectl report`'s SVG chart: a CPU panel and a memory panel of usage, allocation and the predicted
//! band over time, from the broker's `history` reply. No chart library: a few hundred lines of SVG text.

use std::fmt::Write as _;

use predictive_api::wire::History;

use crate::tables::{bytes, utc};

const W: f64 = 960.0;
const PANEL_H: f64 = 230.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 70.0;
const GAP: f64 = 70.0;

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One panel's series, in seconds since the start and the panel's unit.
struct Series {
    usage: Vec<(f64, f64)>,
    alloc: Vec<(f64, f64)>,
    /// (x0, x1, lower, upper) per predicted bucket.
    band: Vec<(f64, f64, f64, f64)>,
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * mag >= v {
            return m * mag;
        }
    }
    10.0 * mag
}

fn pts(v: &[(f64, f64)]) -> String {
    let mut s = String::new();
    for (i, (x, y)) in v.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let _ = write!(s, "{x:.1},{y:.1}");
    }
    s
}

#[allow(clippy::too_many_arguments)]
fn panel(
    out: &mut String,
    id: &str,
    title: &str,
    top: f64,
    s: &Series,
    t_max: f64,
    fmt: &dyn Fn(f64) -> String,
) {
    let y_max = nice_max(
        s.usage
            .iter()
            .map(|p| p.1)
            .chain(s.alloc.iter().map(|p| p.1))
            .chain(s.band.iter().map(|b| b.3))
            .fold(0.0, f64::max)
            * 1.05,
    );
    let pw = W - LEFT - RIGHT;
    let x = |t: f64| LEFT + (t / t_max).clamp(0.0, 1.0) * pw;
    let y = |v: f64| top + PANEL_H - (v / y_max).clamp(0.0, 1.0) * PANEL_H;
    let _ = writeln!(out, "<g id=\"{id}\" class=\"panel\">");
    let _ = writeln!(
        out,
        "<text x=\"{LEFT}\" y=\"{:.1}\" class=\"panel-title\">{}</text>",
        top - 10.0,
        xml(title)
    );
    let _ = writeln!(
        out,
        "<rect x=\"{LEFT}\" y=\"{top}\" width=\"{pw}\" height=\"{PANEL_H}\" class=\"frame\"/>"
    );
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let _ = writeln!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" class=\"grid\"/><text x=\"{:.1}\" y=\"{:.1}\" class=\"ytick\">{}</text>",
            LEFT + pw,
            y(v),
            y(v),
            LEFT - 6.0,
            y(v) + 4.0,
            xml(&fmt(v))
        );
    }
    for i in 0..=6 {
        let t = t_max * f64::from(i) / 6.0;
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"xtick\">{}</text>",
            x(t),
            top + PANEL_H + 16.0,
            xml(&format!("{t:.0}s"))
        );
    }
    // The predicted band: upper edge forward, lower edge back.
    let mut band = Vec::new();
    for b in &s.band {
        band.push((x(b.0), y(b.3)));
        band.push((x(b.1), y(b.3)));
    }
    for b in s.band.iter().rev() {
        band.push((x(b.1), y(b.2)));
        band.push((x(b.0), y(b.2)));
    }
    let _ = writeln!(
        out,
        "<polygon id=\"{id}-predicted-band\" class=\"predicted-band\" data-series=\"predicted band\" points=\"{}\"/>",
        pts(&band)
    );
    // Allocation as steps: a value holds until the next observation.
    let mut alloc = Vec::new();
    for (i, (t, v)) in s.alloc.iter().enumerate() {
        if i > 0 {
            alloc.push((x(*t), alloc.last().map_or(y(*v), |p: &(f64, f64)| p.1)));
        }
        alloc.push((x(*t), y(*v)));
    }
    let _ = writeln!(
        out,
        "<polyline id=\"{id}-allocation\" class=\"allocation\" data-series=\"allocation\" points=\"{}\"/>",
        pts(&alloc)
    );
    let usage: Vec<(f64, f64)> = s.usage.iter().map(|(t, v)| (x(*t), y(*v))).collect();
    let _ = writeln!(
        out,
        "<polyline id=\"{id}-usage\" class=\"usage\" data-series=\"usage\" points=\"{}\"/>",
        pts(&usage)
    );
    if s.usage.is_empty() && s.alloc.is_empty() && s.band.is_empty() {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"empty\">no data</text>",
            LEFT + pw / 2.0,
            top + PANEL_H / 2.0
        );
    }
    out.push_str("</g>\n");
}

/// The report's CPU and memory series (usage, allocation, predicted band) in seconds since the start, and the
/// last point's time.
fn series(h: &History) -> (Series, Series, f64) {
    let t0 = h
        .started_at_ms
        .or_else(|| h.points.first().map(|p| p.at_ms))
        .unwrap_or(0);
    let rel = |ms: u64| ms.saturating_sub(t0) as f64 / 1000.0;
    let mut cpu = Series {
        usage: Vec::new(),
        alloc: Vec::new(),
        band: Vec::new(),
    };
    let mut mem = Series {
        usage: Vec::new(),
        alloc: Vec::new(),
        band: Vec::new(),
    };
    for p in &h.points {
        let t = rel(p.at_ms);
        cpu.usage.push((t, p.cpu_cores));
        mem.usage.push((t, p.memory_bytes as f64));
        if let Some(a) = p.cpu_alloc_cores {
            cpu.alloc.push((t, a));
        }
        if let Some(a) = p.memory_alloc_bytes {
            mem.alloc.push((t, a as f64));
        }
    }
    let last_t = h.points.last().map_or(0.0, |p| rel(p.at_ms));
    if let Some(p) = &h.prediction {
        let d = if p.duration_s.point > 0.0 {
            p.duration_s.point
        } else {
            last_t.max(1.0)
        };
        if p.profile.is_empty() {
            cpu.band
                .push((0.0, d, p.cpu_cores.lower, p.cpu_cores.upper));
            mem.band
                .push((0.0, d, p.memory_bytes.lower, p.memory_bytes.upper));
        } else {
            let n = p.profile.len() as f64;
            for (i, b) in p.profile.iter().enumerate() {
                let (x0, x1) = (d * i as f64 / n, d * (i + 1) as f64 / n);
                cpu.band
                    .push((x0, x1, b.cpu_cores.lower, b.cpu_cores.upper));
                mem.band
                    .push((x0, x1, b.memory_bytes.lower, b.memory_bytes.upper));
            }
        }
    }
    (cpu, mem, last_t)
}

/// The SVG chart of a history: a CPU panel and a memory panel, each with usage, allocation and the predicted
/// band over seconds since the start of the run. Series carry ids `cpu-usage`, `cpu-allocation`,
/// `cpu-predicted-band`, `memory-usage`, `memory-allocation`, `memory-predicted-band`.
pub fn svg(h: &History, name: &str) -> String {
    let (cpu, mem, last_t) = series(h);
    let band_end = cpu.band.last().map_or(0.0, |b| b.1);
    let t_max = nice_max(last_t.max(band_end).max(1.0));
    let height = TOP + 2.0 * PANEL_H + GAP + 60.0;
    let subject = match &h.container_id {
        Some(c) if c == name => format!("container {c} (task type {})", h.task_key),
        Some(c) => format!("task type {} (latest run: container {c})", h.task_key),
        None => format!("task type {}", h.task_key),
    };
    let started = h.started_at_ms.map(utc).unwrap_or_else(|| "-".to_owned());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{height}\" viewBox=\"0 0 {W} {height}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    out.push_str(
        "<style>.frame{fill:none;stroke:#888}.grid{stroke:#ddd}.usage{fill:none;stroke:#1f77b4;stroke-width:1.5}\
.allocation{fill:none;stroke:#d62728;stroke-width:1.5}.predicted-band{fill:#2ca02c;fill-opacity:0.25;stroke:#2ca02c;stroke-opacity:0.5}\
.ytick{text-anchor:end}.xtick{text-anchor:middle}.panel-title{font-weight:bold}.title{font-size:15px;font-weight:bold}.empty{text-anchor:middle;fill:#888}</style>\n",
    );
    let _ = writeln!(
        out,
        "<title>{}</title>\n<text x=\"{LEFT}\" y=\"24\" class=\"title\">{}</text>\n<text x=\"{LEFT}\" y=\"42\">started {} UTC; {} points; {}{}</text>",
        xml(&format!("predictive report: {subject}")),
        xml(&subject),
        xml(&started),
        h.points.len(),
        if h.live { "running" } else { "not running" },
        match &h.prediction {
            Some(p) => format!(
                "; predicted band at level {:.2} from model v{} ({} runs)",
                p.level, p.model_version, p.runs
            ),
            None => "; cold start: no prediction".to_owned(),
        },
    );
    // Legend.
    let ly = 58.0;
    for (i, (class, label)) in [
        ("usage", "usage"),
        ("allocation", "allocation"),
        ("predicted-band", "predicted band"),
    ]
    .iter()
    .enumerate()
    {
        let lx = W - RIGHT - 330.0 + 115.0 * i as f64;
        let _ = writeln!(
            out,
            "<rect x=\"{lx}\" y=\"{:.1}\" width=\"18\" height=\"8\" class=\"{class}\"/><text x=\"{:.1}\" y=\"{:.1}\">{label}</text>",
            ly - 8.0,
            lx + 24.0,
            ly
        );
    }
    panel(
        &mut out,
        "cpu",
        "CPU (cores)",
        TOP + 20.0,
        &cpu,
        t_max,
        &|v| format!("{v:.2}"),
    );
    panel(
        &mut out,
        "memory",
        "Memory",
        TOP + 20.0 + PANEL_H + GAP,
        &mem,
        t_max,
        &bytes,
    );
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" class=\"xtick\">seconds since start</text>\n</svg>",
        LEFT + (W - LEFT - RIGHT) / 2.0,
        height - 8.0
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use predictive_api::wire as api;

    #[test]
    fn svg_has_the_three_series_and_escapes_names() {
        let h = History {
            task_key: "a<b>&c".to_owned(),
            container_id: Some("c1".to_owned()),
            live: true,
            started_at_ms: Some(1000),
            total_points: None,
            next_offset: None,
            points: (0..5)
                .map(|i| api::HistoryPoint {
                    at_ms: 1000 + i * 1000,
                    cpu_cores: 0.1 * i as f64,
                    memory_bytes: 1 << 20,
                    cpu_alloc_cores: Some(0.5),
                    memory_alloc_bytes: Some(2 << 20),
                    ..api::HistoryPoint::default()
                })
                .collect(),
            prediction: None,
        };
        let s = svg(&h, "c1");
        for id in [
            "cpu-usage",
            "cpu-allocation",
            "cpu-predicted-band",
            "memory-usage",
        ] {
            assert!(s.contains(&format!("id=\"{id}\"")), "{id}");
        }
        assert!(s.contains("a&lt;b&gt;&amp;c") && !s.contains("a<b>"));
        assert!(s.contains("cold start"));
    }
}
