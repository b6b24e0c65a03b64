//! The float ops that stand for Q/DQ nodes: scalar constants shared, casts, rounding to the
//! integer grid or to float8, clamping, dequantizing.

use super::*;

pub(super) fn cast_to(to: DataType) -> AttributeProto {
    ir::int_attr("to", to as i64)
}

pub(super) fn node(op: &str, inputs: &[&str], output: &str, name: String) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(name),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        ..Default::default()
    }
}

/// Builds the float nodes of one model and the scalar constants they share.
pub(super) struct Builder<'a> {
    pub(super) names: Names,
    pub(super) patch: Patch,
    pub(super) scalars: HashMap<u32, String>,
    pub(super) prefix: &'a str,
}

impl Builder<'_> {
    pub(super) fn scalar(&mut self, v: f32) -> String {
        if let Some(n) = self.scalars.get(&v.to_bits()) {
            return n.clone();
        }
        let name = self.names.fresh(&format!("{}const_{v}", self.prefix));
        self.patch
            .add_initializers
            .push(f32_tensor(&name, &[], &[v]));
        self.scalars.insert(v.to_bits(), name.clone());
        name
    }

    pub(super) fn scalar64(&mut self, v: f64) -> String {
        let name = self.names.fresh(&format!("{}const64_{v}", self.prefix));
        self.patch.add_initializers.push(TensorProto {
            name: Some(name.clone()),
            data_type: Some(DataType::Double as i32),
            raw_data: Some(v.to_le_bytes().to_vec().into()),
            ..Default::default()
        });
        name
    }

    /// `Cast(input, to)` after `anchor`'s producer; returns its output.
    pub(super) fn cast(&mut self, input: &str, to: DataType, anchor: &str) -> String {
        let out = self.names.fresh(&format!("{anchor}_sim_cast"));
        let name = self.names.fresh(&out);
        let mut n = node("Cast", &[input], &out, name);
        n.attribute.push(cast_to(to));
        self.patch
            .nodes
            .push((Placement::After(anchor.to_string()), n));
        out
    }

    /// Adds `op(inputs)` after `anchor`'s producer; returns its output.
    pub(super) fn op(&mut self, op: &str, inputs: &[&str], anchor: &str, base: &str) -> String {
        let out = self
            .names
            .fresh(&format!("{base}_sim_{}", op.to_lowercase()));
        let name = self.names.fresh(&out);
        self.patch.nodes.push((
            Placement::After(anchor.to_string()),
            node(op, inputs, &out, name),
        ));
        out
    }

    pub(super) fn op_to(&mut self, op: &str, inputs: &[&str], anchor: &str, output: &str) {
        let name = self
            .names
            .fresh(&format!("{output}_sim_{}", op.to_lowercase()));
        self.patch.nodes.push((
            Placement::After(anchor.to_string()),
            node(op, inputs, output, name),
        ));
    }

    /// `Max(Min(t, hi), lo)` after `anchor`'s producer.
    pub(super) fn clamp(&mut self, t: &str, lo: f32, hi: f32, anchor: &str) -> String {
        let (lo, hi) = (self.scalar(lo), self.scalar(hi));
        let t = self.op("Min", &[t, &hi], anchor, anchor);
        self.op("Max", &[&t, &lo], anchor, anchor)
    }

    /// `t` rounded to the nearest float8 e4m3fn value (ties to even) and saturated to ±448, as
    /// QuantizeLinear with `saturate=1` does: `Round(t / q) · q`, where the step `q` is
    /// `2^(e-3)` for `t` in `[2^e, 2^(e+1))` (`2^-9` below `2^-6`, the subnormals). The exponent
    /// `e = Floor(Log(|t|) / ln 2)` can be one off within a relative 1e-6 of a power of two,
    /// where both steps round to that power; `q` is read from a table of exact powers of two.
    pub(super) fn round_to_fp8(&mut self, t: &str, anchor: &str) -> String {
        let a = self.op("Abs", &[t], anchor, anchor);
        let log = self.op("Log", &[&a], anchor, anchor);
        let ln2 = self.scalar(std::f32::consts::LN_2);
        let log2 = self.op("Div", &[&log, &ln2], anchor, anchor);
        let e = self.op("Floor", &[&log2], anchor, anchor);
        // e in [-6, 8]: below 2^-6 (zero included: Log gives -inf) the subnormal step, from
        // 2^9 up everything saturates
        let e = self.clamp(&e, -6.0, 8.0, anchor);
        let six = self.scalar(6.0);
        let e = self.op("Add", &[&e, &six], anchor, anchor);
        let index = self.cast(&e, DataType::Int64, anchor);
        let steps: Vec<f32> = (-6..=8).map(|e| 2f32.powi(e - 3)).collect();
        let table = self.names.fresh(&format!("{}fp8_steps", self.prefix));
        self.patch
            .add_initializers
            .push(f32_tensor(&table, &[steps.len()], &steps));
        let step = self.op("Gather", &[&table, &index], anchor, anchor);
        let units = self.op("Div", &[t, &step], anchor, anchor);
        let units = self.op("Round", &[&units], anchor, anchor);
        let r = self.op("Mul", &[&units, &step], anchor, anchor);
        let max = crate::params::FP8_MAX;
        self.clamp(&r, -max, max, anchor)
    }

    /// `output = (q - zp) · scale` for a per-tensor DequantizeLinear of a float tensor `q`.
    pub(super) fn dequantize_value(&mut self, q: &str, p: &Params, anchor: &str, output: &str) {
        let mut t = q.to_string();
        if p.zero_point[0] != 0 {
            let zp = self.scalar(p.zero_point[0] as f32);
            t = self.op("Sub", &[&t, &zp], anchor, output);
        }
        let s = self.scalar(p.scale[0]);
        self.op_to("Mul", &[&t, &s], anchor, output);
    }
}
