//! The statistics guards: what calibration shows should stay float (small values a `Log`
//! reads, depthwise convolutions one int8 scale leaves in noise).

use super::*;

/// Share of a tensor's values under half an int8 step above which a tensor whose small values
/// reach a `Log` stays float: a power spectrum has 91 % there, the STFT output it is the
/// square of 67 %, the audio itself 7 % (openWakeWord's mel front end).
pub const LOG_SMALL_SHARE: f64 = 0.25;

impl QuantPlan {
    /// The nodes to keep float because small values that reach a `Log` would be lost: those
    /// reading a planned activation more than [`LOG_SMALL_SHARE`] of whose values are under
    /// half its int8 step, and the quantized weighted ops whose output is mostly under half an
    /// int8 step of its own range (int8 weights or inputs leave an error floor about that
    /// high). `steps`: tensor → scale; `share`: tensor, threshold → the share of its values
    /// under it (`None` without a histogram: kept float too); `amax`: observed `|x|` maximum.
    pub fn small_log_inputs(
        &self,
        model: &ModelProto,
        steps: &HashMap<String, f32>,
        share: &dyn Fn(&str, f64) -> Option<f64>,
        amax: &dyn Fn(&str) -> Option<f32>,
    ) -> Vec<(NodeId, String)> {
        let graph = crate::ir::graph(model);
        let index = ir::Index::new(graph);
        let mut out: Vec<(NodeId, String)> = Vec::new();
        // tensors whose small values int8 would erase, with why: then also every tensor they
        // reach on their way to the Log, which carries the same small values
        let mut lost: Vec<(String, String)> = Vec::new();
        for (id, t) in &self.log_probes {
            let log = &self.log_fed[t];
            let Some(a) = amax(t).filter(|a| *a > 0.0) else {
                continue;
            };
            let why = match share(t, f64::from(a) / 254.0) {
                Some(s) if s <= LOG_SMALL_SHARE => continue,
                Some(s) => format!(
                    "{:.0}% of its output `{t}` is under half an int8 step of its range, and reaches `{log}`, a logarithm: int8 weights or inputs would leave an error floor above those values",
                    s * 100.0
                ),
                None => format!(
                    "its output `{t}` reaches `{log}`, a logarithm, and its statistics hold no histogram to tell whether int8 would erase its small values"
                ),
            };
            out.push((*id, why.clone()));
            lost.push((t.clone(), why));
        }
        for a in &self.activations {
            let (Some(log), Some(&scale)) = (self.log_fed.get(&a.tensor), steps.get(&a.tensor))
            else {
                continue;
            };
            let t = &a.tensor;
            let why = match share(t, f64::from(scale) / 2.0) {
                Some(s) if s <= LOG_SMALL_SHARE => continue,
                Some(s) => format!(
                    "{:.0}% of `{t}`'s values are under half its int8 step, and its small values reach `{log}`, a logarithm, which would turn their loss into errors of many dB",
                    s * 100.0
                ),
                None => format!(
                    "`{t}` reaches `{log}`, a logarithm, and its statistics hold no histogram to tell how many of its values an int8 step would erase"
                ),
            };
            lost.push((t.clone(), why));
        }
        let mut seen = std::collections::BTreeSet::new();
        while let Some((t, why)) = lost.pop() {
            if !seen.insert(t.clone()) {
                continue;
            }
            if let Some(a) = self.site(&t) {
                let mut readers: Vec<NodeId> = a.consumers.iter().map(|c| c.0).collect();
                if a.all_consumers {
                    readers.extend(index.consumers(&t).iter().map(|c| c.0));
                }
                for id in readers {
                    if !out.iter().any(|o| o.0 == id) {
                        out.push((id, why.clone()));
                    }
                }
            }
            for &(c, _) in index.consumers(&t) {
                for o in &graph.node[c].output {
                    if self.log_fed.contains_key(o) {
                        lost.push((o.clone(), why.clone()));
                    }
                }
            }
        }
        out
    }
}

/// Least SQNR of a depthwise convolution's output, channel by channel after normalization,
/// with one int8 scale on its input; under it the convolution stays float. A paddle2onnx
/// PP-LCNet estimates 6.5-25 dB for its depthwise convolutions (BatchNormalization scales up to
/// 29 after them): kept float, its output goes from 5.3 to 22 dB against fp32.
pub const DEPTHWISE_MIN_SQNR_DB: f64 = 20.0;

impl QuantPlan {
    /// The convolutions to keep float because one int8 scale for their input would leave
    /// their output, each channel normalized by its spread, with less than
    /// [`DEPTHWISE_MIN_SQNR_DB`] of signal over the noise one input step adds:
    /// `noise_c = step/√12 · |w_c|` (`w_c` the channel's kernel times the BatchNormalization
    /// scale after it), `signal_c` the channel's observed spread (`spread`: tensor →
    /// per-channel standard deviations). `steps`: tensor → scale.
    pub fn noisy_convolutions(
        &self,
        model: &ModelProto,
        steps: &HashMap<String, f32>,
        spread: &dyn Fn(&str) -> Option<Vec<f64>>,
        floor_db: f64,
    ) -> Vec<(NodeId, String)> {
        let graph = crate::ir::graph(model);
        let index = ir::Index::new(graph);
        let mut out = Vec::new();
        for p in &self.depthwise {
            let Some(db) = depthwise_sqnr(&index, p, steps, spread) else {
                continue;
            };
            if db >= floor_db {
                continue;
            }
            let node = &graph.node[p.node];
            let kind = if ir::attr_int(node, "group").unwrap_or(1) > 1 {
                "depthwise: "
            } else {
                ""
            };
            out.push((p.node, format!(
                "{kind}one int8 scale for `{}` leaves its output at {db:.1} dB channel by channel, under the {floor_db} dB of placement.min_conv_sqnr (its quiet channels get few steps, and normalization scales their noise up)",
                p.input
            )));
        }
        out
    }
}

/// The channel-by-channel SQNR estimate of [`QuantPlan::drop_noisy_depthwise`], `None` when a
/// piece is missing (no statistics, a weight that is not constant).
fn depthwise_sqnr(
    index: &ir::Index,
    p: &DepthwiseProbe,
    steps: &HashMap<String, f32>,
    spread: &dyn Fn(&str) -> Option<Vec<f64>>,
) -> Option<f64> {
    let step = f64::from(*steps.get(&p.input)?);
    let std = spread(&p.output)?;
    let node = index.node(p.node);
    let w = constant_values(index, node.input.get(1)?)?;
    let channels = w.0.first().copied()?;
    if channels == 0 || channels != std.len() || w.1.len() % channels != 0 {
        return None;
    }
    let per = w.1.len() / channels;
    let mut gain: Vec<f64> =
        w.1.chunks_exact(per)
            .map(|k| {
                k.iter()
                    .map(|&v| f64::from(v) * f64::from(v))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect();
    if let Some(bn) = p.batchnorm {
        let bn = index.node(bn);
        let scale = constant_values(index, bn.input.get(1)?)?.1;
        let var = constant_values(index, bn.input.get(4)?)?.1;
        let eps = ir::attr(bn, "epsilon").map_or(1e-5, |a| f64::from(a.f()));
        if scale.len() != channels || var.len() != channels {
            return None;
        }
        for (g, (s, v)) in gain.iter_mut().zip(scale.iter().zip(&var)) {
            *g *= f64::from(*s).abs() / (f64::from(*v) + eps).sqrt();
        }
    }
    let loudest = std.iter().cloned().fold(0.0, f64::max);
    let ratios: Vec<f64> = std
        .iter()
        .zip(&gain)
        // a constant channel carries nothing to lose
        .filter(|(s, _)| **s > loudest * 1e-6)
        .map(|(s, g)| {
            let noise = step / 12f64.sqrt() * g;
            (noise / s).powi(2)
        })
        .collect();
    if ratios.is_empty() {
        return None;
    }
    let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
    (mean > 0.0).then(|| -10.0 * mean.log10())
}

/// The dims and float values of a constant (an initializer or computed by Constant nodes).
fn constant_values(index: &ir::Index, name: &str) -> Option<(Vec<usize>, Vec<f32>)> {
    match index.initializer(name) {
        Some(t) => Some((
            t.dims.iter().map(|&d| d as usize).collect(),
            crate::onnx::tensor::f32_data(t).ok()?,
        )),
        None => ir::constant::evaluate(index, name).map(|(c, _)| (c.dims, c.data)),
    }
}
