//! What a run did and why: a human summary for stderr and the same data as JSON (`--report`).

pub mod explain;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;

use serde::Serialize;

use crate::config::Config;
use crate::policy::NodeDecision;
use crate::rewrite::WeightReport;

/// A file read or written.
#[derive(Clone, Debug, Serialize)]
pub struct FileReport {
    pub path: PathBuf,
    pub bytes: u64,
    /// External-data side files and their total size.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub data_files: Vec<PathBuf>,
    pub data_bytes: u64,
}

impl FileReport {
    pub fn total(&self) -> u64 {
        self.bytes + self.data_bytes
    }
}

/// One calibrated activation.
#[derive(Clone, Debug, Serialize)]
pub struct ActivationReport {
    pub tensor: String,
    /// Observed extremes.
    pub min: f32,
    pub max: f32,
    /// The range the method chose (what the scale covers).
    pub range: [f32; 2],
    pub dtype: &'static str,
    pub scale: f32,
    pub zero_point: i32,
    /// The SQNR of the quantization on the calibration samples, estimated from the histogram
    /// (when there is one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqnr_db: Option<f64>,
    /// Settings an override decided (`method: override #1 (q.yaml:4)`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub decided_by: Vec<String>,
}

/// One subgraph in the report.
#[derive(Clone, Debug, Serialize)]
pub struct SubgraphReport {
    /// `If_25/then_branch`.
    pub scope: String,
    pub nodes: usize,
    pub quantized_nodes: usize,
    /// Q/DQ pairs on activations inside it.
    pub activations: usize,
    /// Weights stored quantized inside it.
    pub weights: usize,
    /// Why it stays float, when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The calibration run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CalibrationReport {
    pub source: PathBuf,
    pub samples: usize,
    pub skipped_files: usize,
    pub threads: usize,
}

/// Everything `onnx-quant` reports about one quantization.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub tool: String,
    pub input: FileReport,
    pub output: Option<FileReport>,
    pub config: Config,
    /// Where each setting comes from: key → preset, settings file or command line.
    pub sources: BTreeMap<String, String>,
    pub calibration: CalibrationReport,
    pub opset: Option<i64>,
    pub nodes: Vec<NodeDecision>,
    /// The If branches and Loop bodies: quantized inside, or float and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subgraphs: Vec<SubgraphReport>,
    pub activations: Vec<ActivationReport>,
    pub weights: Vec<WeightReport>,
    pub notes: Vec<String>,
    pub warnings: Vec<String>,
    /// The written model against the input (`--per-layer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<crate::accuracy::compare::Comparison>,
    /// The automatic mixed-precision search (`--target-sqnr`, `--max-top1-drop`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mixed_precision: Option<crate::accuracy::mixed::Search>,
    /// The float16 conversion (`--high-precision fp16`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fp16: Option<crate::rewrite::fp16::Fp16Report>,
    /// Wall time per stage, in milliseconds, in stage order.
    pub timings_ms: Vec<(String, f64)>,
}

fn kb(bytes: u64) -> String {
    if bytes >= 10 << 20 {
        format!("{:.1} MB", bytes as f64 / 1e6)
    } else {
        format!("{:.1} KB", bytes as f64 / 1e3)
    }
}

fn counts<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let mut m: BTreeMap<&str, usize> = BTreeMap::new();
    items.for_each(|k| *m.entry(k).or_default() += 1);
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Report {
    /// The multi-line summary printed on stderr.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let out = self.output.as_ref();
        let _ = writeln!(
            s,
            "onnx-quant: {} -> {}",
            self.input.path.display(),
            out.map_or("(not written)".into(), |o| o.path.display().to_string())
        );
        self.summary_nodes(&mut s);
        self.summary_activations(&mut s);
        self.summary_weights(&mut s);
        self.summary_fp16(&mut s);
        self.summary_size_time_notes(&mut s);
        self.summary_mixed(&mut s);
        self.summary_accuracy(&mut s);
        s
    }

    /// What was quantized, what stayed float and why, each subgraph.
    fn summary_nodes(&self, s: &mut String) {
        let quantized: Vec<&NodeDecision> = self.nodes.iter().filter(|n| n.quantized).collect();
        let _ = writeln!(
            s,
            "  quantized {} of {} nodes ({})",
            quantized.len(),
            self.nodes.len(),
            counts(quantized.iter().map(|n| n.op_type.as_str()))
        );
        let weighted_float: Vec<&NodeDecision> = self
            .nodes
            .iter()
            .filter(|n| {
                !n.quantized
                    && !n.reason.as_deref().is_some_and(|r| r.starts_with("in `"))
                    && matches!(
                        n.op_type.as_str(),
                        "Conv" | "ConvTranspose" | "Gemm" | "MatMul"
                    )
            })
            .collect();
        for n in &weighted_float {
            let _ = writeln!(
                s,
                "  kept float: `{}` ({}): {}",
                n.name,
                n.op_type,
                n.reason.as_deref().unwrap_or("")
            );
        }
        let mut by_reason: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for n in self
            .nodes
            .iter()
            .filter(|n| !n.quantized && !weighted_float.iter().any(|w| w.name == n.name))
        {
            by_reason
                .entry(n.reason.as_deref().unwrap_or(""))
                .or_default()
                .push(&n.op_type);
        }
        for (reason, ops) in by_reason {
            let _ = writeln!(s, "  float ({reason}): {}", counts(ops.into_iter()));
        }
        for g in &self.subgraphs {
            let _ = match &g.reason {
                None => writeln!(
                    s,
                    "  subgraph `{}`: quantized {} of {} nodes inside ({} activations, {} weights)",
                    g.scope, g.quantized_nodes, g.nodes, g.activations, g.weights
                ),
                Some(r) => writeln!(
                    s,
                    "  subgraph `{}`: float, {} nodes ({r})",
                    g.scope, g.nodes
                ),
            };
        }
    }

    /// The activations: their types, the range method, the samples.
    fn summary_activations(&self, s: &mut String) {
        let a = &self.config.activation;
        if self.config.weight_only {
            let _ = writeln!(s, "  activations: float (weight_only)");
        } else {
            // tensors the placement or an override gave another type
            let mut other: BTreeMap<&str, usize> = BTreeMap::new();
            for t in self
                .activations
                .iter()
                .filter(|t| t.dtype != a.qtype.name())
            {
                *other.entry(t.dtype).or_default() += 1;
            }
            let other = if other.is_empty() {
                String::new()
            } else {
                let parts: Vec<String> = other.iter().map(|(d, n)| format!("{n} {d}")).collect();
                format!(" ({} of them)", parts.join(", "))
            };
            let _ = writeln!(
                s,
                "  activations: {} tensors, {} {}{other}, {} over {} samples",
                self.activations.len(),
                a.qtype.name(),
                if a.symmetric {
                    "symmetric"
                } else {
                    "asymmetric"
                },
                self.config.method.name(),
                self.calibration.samples
            );
        }
    }

    /// The weights by type and granularity, and what the int16 pair fix cost.
    fn summary_weights(&self, s: &mut String) {
        let mut kinds: BTreeMap<(&str, Option<usize>), [usize; 2]> = BTreeMap::new();
        for w in &self.weights {
            let k = kinds.entry((w.dtype.name(), w.block_size)).or_default();
            k[usize::from(w.axis.is_none())] += 1;
        }
        let kinds: Vec<String> = kinds
            .iter()
            .map(|((ty, block), [channel, tensor])| match block {
                Some(b) => format!("{channel} {ty} in blocks of {b}"),
                None => format!(
                    "{} {ty} ({channel} per-channel, {tensor} per-tensor)",
                    channel + tensor
                ),
            })
            .collect();
        let _ = writeln!(
            s,
            "  weights: {}",
            if kinds.is_empty() {
                "none".to_string()
            } else {
                kinds.join(", ")
            }
        );
        let fixed: Vec<_> = self
            .weights
            .iter()
            .filter_map(|w| w.pairs.as_ref().map(|p| (w, p)))
            .collect();
        if !fixed.is_empty() {
            let pairs: usize = fixed.iter().map(|(_, p)| p.pairs).sum();
            let rescaled: usize = fixed.iter().map(|(_, p)| p.rescaled).sum();
            let channels: usize = fixed.iter().map(|(_, p)| p.channels).sum();
            let (worst, name) = fixed
                .iter()
                .map(|(w, p)| (p.sqnr_before_db - p.sqnr_after_db, w.name.as_str()))
                .fold((0.0f64, ""), |a, b| if b.0 > a.0 { b } else { a });
            let how = if self.config.cpu_overflow == crate::params::pairs::CpuOverflow::All {
                "7-bit weights (cpu_overflow: all)".to_string()
            } else {
                format!(
                    "{pairs} pair(s) that could saturate fixed ({rescaled} of {channels} channels with a larger scale, the rest pair by pair)"
                )
            };
            let _ = writeln!(
                s,
                "  x86 without VNNI: int8 weight pairs kept inside int16 in {} weight(s): {how}; weight SQNR down {worst:.1} dB at most (`{name}`)",
                fixed.len(),
            );
        }
        self.summary_engine(s);
    }

    /// GPTQ and bias correction, layer by layer in the JSON report; here their totals.
    fn summary_engine(&self, s: &mut String) {
        let gptq: Vec<&crate::rewrite::GptqReport> = self
            .weights
            .iter()
            .filter_map(|w| w.gptq.as_ref())
            .collect();
        if !gptq.is_empty() {
            let median = |mut v: Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let before = median(gptq.iter().map(|g| g.nearest_sqnr_db).collect());
            let after = median(gptq.iter().map(|g| g.gptq_sqnr_db).collect());
            let changed: usize = gptq.iter().map(|g| g.changed).sum();
            let _ = writeln!(
                s,
                "  GPTQ: {} weight(s), {changed} level(s) away from nearest; layer output SQNR on the calibration data, median {before:.1} dB → {after:.1} dB",
                gptq.len()
            );
        }
        let corrected: Vec<&crate::rewrite::BiasCorrection> = self
            .weights
            .iter()
            .filter_map(|w| w.bias_correction.as_ref())
            .collect();
        if !corrected.is_empty() {
            let added = corrected.iter().filter(|c| c.bias_added).count();
            let _ = writeln!(
                s,
                "  bias correction: {} layer(s){}, the mean output shift of their rounded weights removed (largest {:.2e})",
                corrected.len(),
                if added > 0 {
                    format!(" ({added} given a bias)")
                } else {
                    String::new()
                },
                corrected.iter().map(|c| c.shift_max).fold(0.0, f64::max)
            );
        }
    }

    /// The float16 conversion.
    fn summary_fp16(&self, s: &mut String) {
        if let Some(h) = &self.fp16 {
            let _ = writeln!(
                s,
                "  float16: the unquantized rest (opset 19; {} initializer(s) converted, {} Cast(s), {} node(s) kept float32{})",
                h.initializers,
                h.casts,
                h.kept_fp32.len(),
                if h.clamped_values > 0 {
                    format!(", {} value(s) clamped to ±65504", h.clamped_values)
                } else {
                    String::new()
                }
            );
            for k in &h.kept_fp32 {
                let _ = writeln!(s, "    kept float32: {k}");
            }
        }
    }

    /// Sizes, stage times, notes.
    fn summary_size_time_notes(&self, s: &mut String) {
        if let Some(o) = self.output.as_ref() {
            let ratio = o.total() as f64 / self.input.total().max(1) as f64;
            let _ = writeln!(
                s,
                "  size: {} -> {} ({:.0}%)",
                kb(self.input.total()),
                kb(o.total()),
                ratio * 100.0
            );
        }
        let times: Vec<String> = self
            .timings_ms
            .iter()
            .map(|(k, v)| format!("{k} {v:.0} ms"))
            .collect();
        let _ = writeln!(s, "  time: {}", times.join(", "));
        for n in &self.notes {
            let _ = writeln!(s, "  note: {n}");
        }
    }

    /// The mixed-precision search.
    fn summary_mixed(&self, s: &mut String) {
        if let Some(m) = &self.mixed_precision {
            let _ = writeln!(
                s,
                "  mixed precision, {} (all int8: {}):",
                m.target, m.baseline
            );
            for (i, o) in m.outcomes.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "    {} {:<13} {} {} layer(s), {}{}",
                    if i == m.chosen { "*" } else { " " },
                    o.strategy,
                    o.float.len(),
                    m.fallback,
                    o.score,
                    if o.met { "" } else { " (target missed)" }
                );
            }
            for l in &m.chosen().float {
                let _ = writeln!(s, "    kept {}: `{l}`", m.fallback);
            }
        }
    }

    /// The accuracy of the written model.
    fn summary_accuracy(&self, s: &mut String) {
        if let Some(a) = &self.accuracy {
            let _ = writeln!(
                s,
                "  accuracy against `{}` on {} sample(s):",
                self.input.path.display(),
                a.samples
            );
            s.push_str(&a.summary(5));
        }
    }
}
