//! What a huge constant or a Log reaches, found before the rules run.

use super::*;

/// Ops through which the small values of every input reach a `Log` reading their output.
const LOG_TRANSPARENT: [&str; 19] = [
    "Sum",
    "Mean",
    "Clip",
    "Max",
    "Min",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Relu",
    "Abs",
    "Identity",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "Cast",
    "Concat",
];

/// Constants of this magnitude (or infinite) make additive masks: BERT's -10000, `finfo.min`.
const HUGE: f32 = 1e4;

/// Ops through which a huge value passes from an input to the output.
const CARRY_HUGE: [&str; 14] = [
    "Add",
    "Sub",
    "Mul",
    "Where",
    "Min",
    "Max",
    "Neg",
    "Unsqueeze",
    "Squeeze",
    "Reshape",
    "Expand",
    "Cast",
    "Transpose",
    "Concat",
];

impl Builder<'_> {
    /// Finds the tensors whose small values reach a `Log`: its input, and up from there
    /// through the ops that keep small values small (element-wise ops, powers, sums, the data
    /// input of weighted ops, shape ops). An int8 step is constant, so a tensor most of whose
    /// values are under half a step (a power spectrum, a probability) loses them, and Log
    /// turns that into errors of many dB; whether that is so is known from the statistics
    /// (`QuantPlan::drop_small_log_inputs`).
    pub(super) fn with_log_inputs(mut self) -> Self {
        let mut todo: Vec<(String, String)> = Vec::new();
        for (id, node) in self.graph.node.iter().enumerate() {
            if ir::is_default_domain(node.domain())
                && node.op_type() == "Log"
                && let Some(x) = node.input.first()
            {
                todo.push((x.clone(), ir::node_label(node, id)));
            }
        }
        while let Some((t, log)) = todo.pop() {
            if t.is_empty() || self.log_fed.contains_key(&t) || self.index.initializer(&t).is_some()
            {
                continue;
            }
            self.log_fed.insert(t.clone(), log.clone());
            let Some((p, _)) = self.index.producer(&t) else {
                continue;
            };
            let node = &self.graph.node[p];
            if !ir::is_default_domain(node.domain()) {
                continue;
            }
            // (a weighted op's constant weight is skipped below, a second activation followed:
            // an STFT as a MatMul of a computed basis and the frames)
            let follow: Vec<usize> = match node.op_type() {
                op if LOG_TRANSPARENT.contains(&op) => (0..node.input.len()).collect(),
                "MatMul" | "Gemm" | "Conv" | "ConvTranspose" => vec![0, 1],
                "Pow" | "Sqrt" | "ReduceSum" | "ReduceMean" | "GlobalAveragePool"
                | "AveragePool" | "Slice" | "Split" | "Gather" | "Expand" | "Tile" | "Pad"
                | "Neg" => vec![0],
                _ => vec![],
            };
            for slot in follow {
                if let Some(i) = node.input.get(slot)
                    && ir::constant::evaluate(&self.index, i).is_none()
                {
                    todo.push((i.clone(), log.clone()));
                }
            }
        }
        self
    }

    /// Finds the tensors a huge constant reaches through element-wise and shape ops (in graph
    /// order, so one pass suffices): an additive mask and the scores it is added to, whose
    /// quantized range would be all mask.
    pub(super) fn with_masks(mut self) -> Self {
        for node in &self.graph.node {
            if !ir::is_default_domain(node.domain()) || !CARRY_HUGE.contains(&node.op_type()) {
                continue;
            }
            let reason = node.input.iter().find_map(|i| {
                if let Some(r) = self.masked.get(i) {
                    return Some(r.clone());
                }
                let (lo, hi) = self.constant_range(i)?;
                let big = if lo.abs() >= hi.abs() { lo } else { hi };
                (!big.is_finite() || big.abs() >= HUGE).then(|| {
                    format!(
                        "carries an additive mask (constant `{i}` = {big:e}): quantized, its range would be all mask"
                    )
                })
            });
            if let Some(r) = reason {
                for o in node.output.iter().filter(|o| !o.is_empty()) {
                    self.masked.insert(o.clone(), r.clone());
                }
            }
        }
        self
    }
}
