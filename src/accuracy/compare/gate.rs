//! Gates on a comparison (`--min-sqnr`, `--max-top1-drop`) and its human summary.

use super::*;

/// One accuracy gate and whether it held.
#[derive(Clone, Debug, Serialize)]
pub struct Gate {
    pub gate: &'static str,
    pub value: Option<f64>,
    pub limit: f64,
    pub passed: bool,
}

impl Gate {
    pub fn describe(&self) -> String {
        let v = self.value.map_or("inf".into(), |v| format!("{v:.2}"));
        match self.gate {
            "min_sqnr" => format!("output SQNR {v} dB, at least {} wanted", self.limit),
            _ => format!("top-1 drop {v} points, at most {} allowed", self.limit),
        }
    }
}

/// The gates asked for: worst output SQNR at least `min_sqnr` dB, top-1 drop at most
/// `max_top1_drop` points (needs labels: `None` value then, and the gate fails).
pub fn gates(c: &Comparison, min_sqnr: Option<f64>, max_top1_drop: Option<f64>) -> Vec<Gate> {
    let mut out = Vec::new();
    if let Some(limit) = min_sqnr {
        let value = c.worst_sqnr();
        out.push(Gate {
            gate: "min_sqnr",
            value,
            limit,
            passed: value.is_none_or(|v| v >= limit),
        });
    }
    if let Some(limit) = max_top1_drop {
        let value = c.labels.as_ref().map(|l| l.top1_drop);
        out.push(Gate {
            gate: "max_top1_drop",
            value,
            limit,
            passed: value.is_some_and(|v| v <= limit),
        });
    }
    out
}

impl Comparison {
    /// The human summary: outputs, accuracy, the `worst` worst layers.
    pub fn summary(&self, worst: usize) -> String {
        use crate::accuracy::db;
        use std::fmt::Write;
        let mut s = String::new();
        let width = self
            .outputs
            .iter()
            .map(|o| o.name.len())
            .max()
            .unwrap_or(0)
            .max(6);
        let _ = writeln!(
            s,
            "  {:width$}  {:>8}  {:>8}  {:>10}  {:>6}",
            "output", "SQNR dB", "cosine", "max |err|", "top-1"
        );
        for o in &self.outputs {
            let _ = writeln!(
                s,
                "  {:width$}  {:>8}  {:>8.5}  {:>10.4}  {:>6}",
                o.name,
                db(o.sqnr_db),
                o.cosine,
                o.max_abs_error,
                o.top1_agreement.map_or("-".into(), |a| format!("{a:.1}%"))
            );
        }
        if let Some(l) = &self.labels {
            let _ = writeln!(
                s,
                "  accuracy on {} labelled row(s): fp32 {:.2}%, quantized {:.2}% (drop {:.2} points)",
                l.rows,
                l.fp32_top1,
                l.quantized_top1,
                l.top1_drop + 0.0
            );
        }
        if !self.layers.is_empty() {
            let _ = writeln!(
                s,
                "  worst of {} quantized tensors (SQNR vs fp32 / own rounding, dB):",
                self.layers.len()
            );
            for l in self.layers.iter().take(worst) {
                let _ = writeln!(
                    s,
                    "    {:>6} / {:>6}  {}",
                    db(l.sqnr_db),
                    db(l.local_sqnr_db),
                    l.tensor
                );
            }
        }
        s
    }
}
