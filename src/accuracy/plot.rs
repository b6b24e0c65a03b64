//! The per-layer error as an SVG chart: one row per quantized tensor in graph order, a bar for
//! its SQNR against the float model (everything upstream included) and a tick for its own
//! rounding error, coloured from red (bad) to green. A standalone file any browser opens.

use std::fmt::Write;

use super::LayerMetrics;

const ROW: f64 = 16.0;
const LABEL: f64 = 340.0;
const CHART: f64 = 560.0;
const TOP: f64 = 64.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn colour(db: Option<f64>) -> &'static str {
    match db {
        None => "#2e7d32",
        Some(v) if v < 10.0 => "#c62828",
        Some(v) if v < 20.0 => "#ef6c00",
        Some(v) if v < 30.0 => "#f9a825",
        Some(_) => "#2e7d32",
    }
}

/// Shortens long tensor names from the left, where exporters repeat prefixes.
fn clip(name: &str, max: usize) -> String {
    let n = name.chars().count();
    if n <= max {
        return name.to_string();
    }
    let tail: String = name.chars().skip(n - (max - 1)).collect();
    format!("…{tail}")
}

/// The chart of `layers` (graph order) for the model named `title`.
pub fn layers_svg(title: &str, layers: &[LayerMetrics]) -> String {
    let finite = layers
        .iter()
        .flat_map(|l| [l.sqnr_db, l.local_sqnr_db])
        .flatten()
        .fold(0.0f64, f64::max);
    let top_db = ((finite / 10.0).ceil() * 10.0).max(10.0);
    let x = |db: Option<f64>| LABEL + CHART * db.map_or(1.0, |v| (v / top_db).clamp(0.0, 1.0));
    let height = TOP + ROW * layers.len() as f64 + 40.0;
    let width = LABEL + CHART + 80.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="20" font-size="14" font-weight="bold">{}</text>"#,
        escape(title)
    );
    let _ = writeln!(
        s,
        r#"<text x="10" y="38">SQNR (dB) of each quantized tensor against the float model, graph order; bar: accumulated error, black tick: its own rounding.</text>"#
    );
    // grid every 10 dB
    let mut g = 0.0;
    while g <= top_db {
        let gx = x(Some(g));
        let bottom = TOP + ROW * layers.len() as f64;
        let _ = writeln!(
            s,
            r##"<line x1="{gx:.1}" y1="{:.1}" x2="{gx:.1}" y2="{bottom:.1}" stroke="#ddd"/><text x="{gx:.1}" y="{:.1}" text-anchor="middle">{g:.0}</text>"##,
            TOP - 4.0,
            bottom + 14.0
        );
        g += 10.0;
    }
    for (i, l) in layers.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end"><title>{}</title>{}</text>"#,
            LABEL - 6.0,
            y + ROW - 4.0,
            escape(&l.tensor),
            escape(&clip(&l.tensor, 52))
        );
        let end = x(l.sqnr_db);
        let _ = writeln!(
            s,
            r#"<rect x="{LABEL}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {} dB (own rounding {} dB)</title></rect>"#,
            y + 2.0,
            (end - LABEL).max(0.5),
            ROW - 4.0,
            colour(l.sqnr_db),
            escape(&l.tensor),
            super::db(l.sqnr_db),
            super::db(l.local_sqnr_db)
        );
        let tick = x(l.local_sqnr_db);
        let _ = writeln!(
            s,
            r#"<line x1="{tick:.1}" y1="{:.1}" x2="{tick:.1}" y2="{:.1}" stroke="black" stroke-width="2"/>"#,
            y + 1.0,
            y + ROW - 1.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            end + 4.0,
            y + ROW - 4.0,
            super::db(l.sqnr_db)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_layer_with_escaped_names() {
        let layers = vec![
            LayerMetrics {
                tensor: "a<b>&c".into(),
                node: "q".into(),
                sqnr_db: Some(12.5),
                local_sqnr_db: Some(30.0),
            },
            LayerMetrics {
                tensor: "exact".into(),
                node: "q2".into(),
                sqnr_db: None,
                local_sqnr_db: None,
            },
        ];
        let svg = layers_svg("m.onnx", &layers);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a&lt;b&gt;&amp;c"));
        assert!(!svg.contains("a<b>"));
        assert_eq!(svg.matches("<rect x=").count(), 2);
        assert!(svg.contains("12.5 dB"));
        assert!(svg.contains(">inf<"));
    }
}
