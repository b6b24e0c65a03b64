//! The rules of each kind of op: weighted ops, input ops, residual Adds, embeddings.

use super::*;

impl Builder<'_> {
    /// A Gather from a constant float table of rank 2 (an embedding): the table becomes an int8
    /// weight with one scale per row (axis 0), so each looked-up vector keeps its own scale.
    pub(super) fn embedding(&mut self, id: NodeId) {
        let node = &self.graph.node[id];
        let target = self.config.target.clone();
        let rank2 = |rank: usize| (rank == 2).then_some(0);
        match self.classify(node, 0, rank2) {
            Ok(Input::Weight(w, axis)) if axis.is_some() => {
                self.use_weight(&w, id, 0, axis);
                self.quantized(
                    id,
                    Some("embedding table int8, one scale per row (placement.embeddings)".into()),
                );
            }
            _ => self.float(id, format!("not quantized by the {target} placement")),
        }
    }

    /// The dims of `name`, `None` where unknown or symbolic.
    pub(super) fn shape_of(&self, name: &str) -> Vec<Option<usize>> {
        if let Some(t) = self.index.initializer(name) {
            return t.dims.iter().map(|&d| usize::try_from(d).ok()).collect();
        }
        self.types.get(name).map_or(vec![], |t| t.shape.clone())
    }

    /// K and N of a MatMul / Gemm, when shapes are known.
    pub(super) fn matmul_dims(&self, node: &NodeProto) -> Option<(usize, usize)> {
        let a = self.shape_of(node.input.first()?);
        let b = self.shape_of(node.input.get(1)?);
        let trans = |attr: &str| ir::attr_int(node, attr).unwrap_or(0) != 0;
        let (k, n) = match node.op_type() {
            "Gemm" => (
                if trans("transA") {
                    *a.first()?
                } else {
                    *a.last()?
                },
                if trans("transB") {
                    *b.first()?
                } else {
                    *b.last()?
                },
            ),
            _ => (*a.last()?, *b.last()?),
        };
        Some((k?, n?))
    }

    pub(super) fn weighted(&mut self, id: NodeId) {
        let node = &self.graph.node[id];
        let p = &self.config.placement;
        if matches!(node.op_type(), "MatMul" | "Gemm")
            && p.min_matmul_dim > 0
            && let Some((k, n)) = self.matmul_dims(node)
            && k.min(n) < p.min_matmul_dim
        {
            return self.float(
                id,
                format!(
                    "K = {k}, N = {n}: below min_matmul_dim {}",
                    p.min_matmul_dim
                ),
            );
        }
        let inputs: Result<Vec<Input>, String> = (0..2)
            .map(|slot| {
                self.classify(node, slot, |rank| {
                    if slot == 1 {
                        weight_axis(node, rank)
                    } else {
                        None
                    }
                })
            })
            .collect();
        let inputs = match inputs {
            Ok(i) => i,
            Err(why) => return self.float(id, why),
        };
        let mut act = None;
        let mut weight = None;
        let mut has_weight = false;
        for (slot, input) in inputs.into_iter().enumerate() {
            match input {
                Input::Activation(t) => {
                    if slot == 0 {
                        act = Some(t.clone());
                    }
                    self.use_activation(&t, id, slot)
                }
                Input::Weight(w, axis) => {
                    has_weight = true;
                    if slot == 1 {
                        weight = Some(w.clone());
                    }
                    self.use_weight(&w, id, slot, axis)
                }
            }
        }
        if Self::has(&p.output_ops, node.op_type()) {
            self.quantize_output(node);
        }
        if self.config.bias_int32
            && let (Some(activation), Some(weight)) = (act, weight)
            && let Some(bias) = self.int32_bias(node)
        {
            self.biases.push(BiasSite {
                node: id,
                bias,
                activation,
                weight,
            });
        }
        let unit = Self::has(&self.config.placement.output_ops, node.op_type());
        let remark = match (unit, has_weight) {
            (true, _) => "weighted op, complete node unit (placement.weighted_ops, output_ops)",
            (false, true) => "data and weight inputs (placement.weighted_ops)",
            // attention: Q·Kᵀ and P·V read two activations
            (false, false) => "both data inputs (placement.weighted_ops)",
        };
        self.quantized(id, Some(remark.into()));
    }

    /// The bias of a Conv / Gemm that can become int32: a rank-1 float32 initializer.
    pub(super) fn int32_bias(&self, node: &NodeProto) -> Option<String> {
        if !matches!(node.op_type(), "Conv" | "Gemm") {
            return None;
        }
        let name = node.input.get(2).filter(|n| !n.is_empty())?;
        let t = self.index.initializer(name)?;
        let only_here = self.index.consumers(name).len() == 1 && !self.index.is_graph_input(name);
        (only_here && t.data_type() == DataType::Float as i32 && t.dims.len() == 1)
            .then(|| name.clone())
    }

    pub(super) fn input_op(&mut self, id: NodeId) {
        let node = &self.graph.node[id];
        let unit = Self::has(&self.config.placement.output_ops, node.op_type());
        let slots: Vec<usize> = if VARIADIC.contains(&node.op_type()) {
            (0..node.input.len()).collect()
        } else {
            vec![0]
        };
        let mut uses = Vec::new();
        for slot in slots {
            match self.classify(node, slot, |_| None) {
                Ok(Input::Activation(t)) => uses.push((t, slot, None)),
                // constants join a complete unit quantized like the activation they meet
                // (their own range, the activation type); else they stay float
                Ok(Input::Weight(w, _)) if unit => uses.push((w, slot, Some(()))),
                Ok(Input::Weight(..)) => {}
                Err(why) => return self.float(id, why),
            }
        }
        let activations = uses.iter().filter(|(_, _, w)| w.is_none()).count();
        if activations == 0 {
            return self.float(id, "no activation input");
        }
        if !unit
            && activations < 2
            && VARIADIC.contains(&node.op_type())
            && node.op_type() != "Concat"
        {
            // a bias or scale: runtimes fold it into the op that produces the other operand
            return self.float(
                id,
                "one operand is constant (a bias or scale the runtime fuses)",
            );
        }
        for (t, slot, constant) in uses {
            self.use_activation(&t, id, slot);
            if constant.is_some() {
                let range = self.constant_range(&t);
                let i = self.site_of[&t];
                self.sites[i].fixed_range = range;
            }
        }
        if unit {
            self.quantize_output(node);
        }
        let remark = if unit {
            "complete node unit (placement.input_ops, output_ops)"
        } else {
            "activation inputs (placement.input_ops)"
        };
        self.quantized(id, Some(remark.into()));
    }

    /// The range of a constant's values, widened to include 0.
    pub(super) fn constant_range(&self, name: &str) -> Option<(f32, f32)> {
        let data = match self.index.initializer(name) {
            Some(t) => crate::onnx::tensor::f32_data(t).ok()?,
            None => ir::constant::evaluate(&self.index, name)?.0.data,
        };
        Some(
            data.iter()
                .fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v))),
        )
    }

    /// Whether `tensor` comes straight from a Conv (through an optional BatchNormalization)
    /// and feeds nothing else: the branch an Add fuses into.
    pub(super) fn conv_branch(&self, tensor: &str) -> Option<NodeId> {
        let single = |t: &str| self.index.consumers(t).len() == 1 && !self.index.is_graph_output(t);
        let (p, _) = self.index.producer(tensor)?;
        let node = self.index.node(p);
        let conv = match node.op_type() {
            "Conv" | "ConvTranspose" => p,
            "BatchNormalization" => {
                let (c, _) = self.index.producer(node.input.first()?)?;
                let ok = matches!(self.index.node(c).op_type(), "Conv" | "ConvTranspose")
                    && single(&node.input[0]);
                ok.then_some(c)?
            }
            _ => return None,
        };
        single(tensor).then_some(conv)
    }

    pub(super) fn residual(&mut self, id: NodeId) {
        let node = &self.graph.node[id];
        if node.input.len() != 2 {
            return self.float(id, "not a two-input Add");
        }
        let mut acts = Vec::new();
        for slot in 0..2 {
            match self.classify(node, slot, |_| None) {
                Ok(Input::Activation(t)) => acts.push(t),
                Ok(Input::Weight(..)) => {
                    return self.float(id, "an input is constant: not a residual connection");
                }
                Err(why) => return self.float(id, why),
            }
        }
        if self.config.placement.residual_add == ResidualAdd::AllInputs {
            for (slot, t) in acts.iter().enumerate() {
                self.use_activation(t, id, slot);
            }
            return self.quantized(
                id,
                Some("residual Add: every input (placement.residual_add)".into()),
            );
        }
        let branches: Vec<Option<NodeId>> = acts.iter().map(|t| self.conv_branch(t)).collect();
        let fused = match (branches[0], branches[1]) {
            (Some(a), Some(b)) => usize::from(b > a),
            (Some(_), None) => 0,
            (None, Some(_)) => 1,
            (None, None) => return self.float(id, "no conv branch for the Add to fuse into"),
        };
        let skip = 1 - fused;
        self.use_activation(&acts[skip].clone(), id, skip);
        let conv = ir::node_label(
            self.index.node(branches[fused].expect("fused branch")),
            branches[fused].expect("fused branch"),
        );
        self.quantized(
            id,
            Some(format!("skip input quantized; the Add fuses into `{conv}`")),
        );
    }
}
