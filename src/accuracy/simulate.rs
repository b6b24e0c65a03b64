//! Simulated quantization: any QDQ model rewritten as a float model that computes the same values
//! with plain float ops, so tract runs it exactly as ONNX specifies QuantizeLinear and
//! DequantizeLinear (tract's own int8 kernels round half away from zero, and it runs no int16,
//! int4 or block-wise Q/DQ).
//!
//! - A DequantizeLinear of a constant (weights, int32 biases, stored constants) becomes a float
//!   initializer holding `(q - zero_point) · scale`, per tensor, per axis or per block.
//! - A QuantizeLinear → DequantizeLinear pair on an activation becomes
//!   `Mul(Min/Max-clipped(Round(x / s) + zp) - zp, s)`: `Round` is ONNX's round half to even.
//!   For float8 e4m3fn the rounding is to the float8 grid (a step of `2^(e-3)` for values in
//!   `[2^e, 2^(e+1))`), saturated at ±448.
//! - A DequantizeLinear of any other integer tensor becomes `Cast → Sub → Mul`.
//!
//! Pure: reads a model, returns another. Which quantizer wrote the model does not matter.

use std::collections::{HashMap, HashSet};

use crate::ir::{self, Index, Names, Patch, Placement};
use crate::onnx::tensor::f32_tensor;
use crate::proto::{
    AttributeProto, ModelProto, NodeProto, TensorProto, attribute_proto::AttributeType,
    tensor_proto::DataType,
};

/// A QDQ model turned float, and where its quantization points are.
#[derive(Debug)]
pub struct Simulated {
    pub model: ModelProto,
    /// Every quantized activation (QuantizeLinear → DequantizeLinear pair), in graph order.
    pub activations: Vec<SimSite>,
    /// Constant tensors replaced by their dequantized values (weights, biases, constants).
    pub constants: usize,
}

/// One quantization point of an activation.
#[derive(Clone, Debug, PartialEq)]
pub struct SimSite {
    /// The QuantizeLinear node.
    pub node: String,
    /// The float tensor it quantizes.
    pub input: String,
    /// The simulated dequantized value (the output of the first DequantizeLinear reading it).
    pub output: String,
}

fn is_qdq_domain(domain: &str) -> bool {
    ir::is_default_domain(domain) || domain == "com.microsoft"
}

fn is_op(node: &NodeProto, op: &str) -> bool {
    node.op_type() == op && is_qdq_domain(node.domain())
}

/// The values a quantized element type holds.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Grid {
    /// The integers from `.0` to `.1`.
    Int(i32, i32),
    /// float8 e4m3fn: 3 mantissa bits, ±448, no infinities.
    Fp8,
}

fn grid(data_type: i32) -> Result<Grid, String> {
    if data_type == DataType::Float8e4m3fn as i32 {
        return Ok(Grid::Fp8);
    }
    int_range(data_type).map(|(lo, hi)| Grid::Int(lo, hi))
}

/// The integer range of a quantized element type, `Err` for types simulation does not handle
/// (those past int32).
fn int_range(data_type: i32) -> Result<(i32, i32), String> {
    crate::onnx::tensor::int_range(data_type)
        .and_then(|(lo, hi)| Some((i32::try_from(lo).ok()?, i32::try_from(hi).ok()?)))
        .ok_or_else(|| {
            format!(
                "{} quantization is not simulated",
                crate::onnx::tensor::elem_type_name(data_type)
            )
        })
}

/// The integer values of an integer tensor (int4/uint4 unpacked).
fn int_values(t: &TensorProto) -> Result<Vec<i32>, String> {
    int_range(t.data_type())?;
    let v = crate::onnx::tensor::ints(t)?;
    Ok(v.into_iter().map(|x| x as i32).collect())
}

/// The tensor value of `name` when it is constant: an initializer (not overridable) or the
/// output of a `Constant` node.
fn constant<'g>(index: &Index<'g>, name: &str) -> Option<&'g TensorProto> {
    if let Some(t) = index.initializer(name) {
        return (!index.is_graph_input(name)).then_some(t);
    }
    let (id, _) = index.producer(name)?;
    let node = index.node(id);
    if node.op_type() != "Constant" || !ir::is_default_domain(node.domain()) {
        return None;
    }
    let a = ir::attr(node, "value")?;
    (a.r#type() == AttributeType::Tensor).then_some(())?;
    a.t.as_ref()
}

/// The values of a float8 e4m3fn tensor.
fn fp8_values(t: &TensorProto) -> Result<Vec<f32>, String> {
    let b = crate::onnx::tensor::le_bytes(t)?;
    Ok(b.iter().map(|&b| crate::params::from_fp8(b)).collect())
}

/// Scale and zero-point of a Q or DQ node: float scales (one per element), integer zero-points
/// (zeros when absent or float8), and the quantized type's values.
struct Params {
    scale: Vec<f32>,
    scale_dims: Vec<usize>,
    zero_point: Vec<i32>,
    grid: Grid,
}

impl Params {
    /// Per-axis parameters that repeat one scale and one zero-point are per-tensor ones (the
    /// `ort` target writes them so for float convs, which ONNX Runtime would otherwise quantize).
    fn uniform(self) -> Params {
        let same = self.scale.windows(2).all(|w| w[0] == w[1])
            && self.zero_point.windows(2).all(|w| w[0] == w[1]);
        if self.scale.len() <= 1 || !same {
            return self;
        }
        Params {
            scale: vec![self.scale[0]],
            scale_dims: Vec::new(),
            zero_point: vec![self.zero_point[0]],
            grid: self.grid,
        }
    }
}

fn params(index: &Index, node: &NodeProto, label: &str) -> Result<Params, String> {
    let scale_name = node.input.get(1).map_or("", |s| s.as_str());
    let scale_t = constant(index, scale_name)
        .ok_or_else(|| format!("`{label}`: its scale `{scale_name}` is not a constant"))?;
    let scale = ir::constant::float_values(scale_t)
        .ok_or_else(|| format!("`{label}`: its scale `{scale_name}` is not a float tensor"))?;
    let scale_dims = scale_t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).unwrap_or(0))
        .collect();
    let zp_name = node.input.get(2).map_or("", |s| s.as_str());
    let (zero_point, data_type) = if zp_name.is_empty() {
        let dt = ir::attr_int(node, "output_dtype")
            .filter(|&d| d != 0)
            .unwrap_or(DataType::Uint8 as i64);
        (vec![0; scale.len()], dt as i32)
    } else {
        let zp_t = constant(index, zp_name)
            .ok_or_else(|| format!("`{label}`: its zero-point `{zp_name}` is not a constant"))?;
        let zp_err = |e: String| format!("`{label}`: zero-point `{zp_name}`: {e}");
        let v = if grid(zp_t.data_type()) == Ok(Grid::Fp8) {
            let v = fp8_values(zp_t).map_err(zp_err)?;
            if v.iter().any(|&z| z != 0.0) {
                return Err(zp_err(
                    "a non-zero float8 zero-point is not simulated".into(),
                ));
            }
            vec![0; v.len()]
        } else {
            int_values(zp_t).map_err(zp_err)?
        };
        (v, zp_t.data_type())
    };
    if zero_point.len() != scale.len() {
        return Err(format!(
            "`{label}`: {} zero-points for {} scales",
            zero_point.len(),
            scale.len()
        ));
    }
    let grid = grid(data_type).map_err(|e| format!("`{label}`: {e}"))?;
    Ok(Params {
        scale,
        scale_dims,
        zero_point,
        grid,
    })
}

/// `(q - zp) · scale` of a constant, as DequantizeLinear computes it (per tensor, per axis or
/// per block along `axis`).
fn dequantize(
    node: &NodeProto,
    label: &str,
    q: &TensorProto,
    p: &Params,
) -> Result<Vec<f32>, String> {
    // float8 values dequantize with a zero zero-point (checked in `params`)
    let values: Vec<f32> = match p.grid {
        Grid::Fp8 => fp8_values(q),
        Grid::Int(..) => int_values(q).map(|v| v.into_iter().map(|i| i as f32).collect()),
    }
    .map_err(|e| format!("`{label}`: {e}"))?;
    let dims: Vec<usize> = q
        .dims
        .iter()
        .map(|&d| usize::try_from(d).unwrap_or(0))
        .collect();
    let rank = dims.len() as i64;
    let axis = ir::attr_int(node, "axis").unwrap_or(1);
    let block = ir::attr_int(node, "block_size").unwrap_or(0);
    let at = |i: usize, k: usize| (values[i] - p.zero_point[k] as f32) * p.scale[k];
    if p.scale.len() == 1 && block == 0 {
        return Ok((0..values.len()).map(|i| at(i, 0)).collect());
    }
    let axis = if axis < 0 { axis + rank } else { axis };
    let axis = usize::try_from(axis)
        .ok()
        .filter(|&a| a < dims.len())
        .ok_or_else(|| format!("`{label}`: axis {axis} outside a rank-{rank} tensor"))?;
    let inner: usize = dims[axis + 1..].iter().product();
    if block == 0 {
        if p.scale.len() != dims[axis] {
            return Err(format!(
                "`{label}`: {} scales for axis {axis} of size {}",
                p.scale.len(),
                dims[axis]
            ));
        }
        return Ok((0..values.len())
            .map(|i| at(i, (i / inner) % dims[axis]))
            .collect());
    }
    // block-wise: the scale has the input's shape with `axis` divided by the block size
    let block = usize::try_from(block).map_err(|_| format!("`{label}`: negative block_size"))?;
    let mut sdims = dims.clone();
    sdims[axis] = dims[axis].div_ceil(block);
    if p.scale_dims != sdims {
        return Err(format!(
            "`{label}`: block-wise scale of shape {:?} for data {:?} and block size {block}",
            p.scale_dims, dims
        ));
    }
    let outer_stride = dims[axis] * inner;
    let s_outer_stride = sdims[axis] * inner;
    Ok((0..values.len())
        .map(|i| {
            let (o, rest) = (i / outer_stride, i % outer_stride);
            let (a, r) = (rest / inner, rest % inner);
            at(i, o * s_outer_stride + (a / block) * inner + r)
        })
        .collect())
}

/// The float model computing what `model`'s QDQ nodes compute. `Err` names every node it
/// cannot simulate (per-channel activations, QuantizeLinear read by a QLinear op, ...).
// The driver: the float16 refusal, the Q -> DQ pairs, the lone DequantizeLinear nodes and the
// unread constants (each a function), then the patch applied.
pub fn simulate(model: &ModelProto) -> Result<Simulated, String> {
    let graph = model.graph.as_ref().ok_or("model has no graph")?;
    let index = Index::new(graph);
    let float16_scales = graph
        .node
        .iter()
        .filter(|n| is_op(n, "QuantizeLinear") || is_op(n, "DequantizeLinear"))
        .filter_map(|n| constant(&index, n.input.get(1)?))
        .filter(|t| t.data_type() != DataType::Float as i32)
        .count();
    if float16_scales > 0 {
        return Err(format!(
            "{float16_scales} Q/DQ node(s) with scales that are not float32: a float16 model (--high-precision fp16) is not simulated; evaluate the model quantized without that option"
        ));
    }
    let mut b = Builder {
        names: Names::new(&index),
        patch: Patch::default(),
        scalars: HashMap::new(),
        prefix: "sim_",
    };
    let mut problems = Vec::new();
    let mut removed: HashSet<usize> = HashSet::new();
    let mut activations = Vec::new();
    let mut constants = 0;

    // Q → DQ pairs
    for (id, q) in graph.node.iter().enumerate() {
        if !is_op(q, "QuantizeLinear") {
            continue;
        }
        let label = ir::node_label(q, id);
        let (Some(x), Some(qout)) = (q.input.first(), q.output.first()) else {
            continue;
        };
        let mut site = || -> Result<(), String> {
            let dqs = simulate_pair(&index, &mut b, q, &label, (x, qout))?;
            for (r, _) in &dqs {
                removed.insert(*r);
            }
            if let Some((r, _)) = dqs.first() {
                activations.push(SimSite {
                    node: label.clone(),
                    input: x.clone(),
                    output: index.node(*r).output[0].clone(),
                });
            }
            removed.insert(id);
            Ok(())
        };
        if let Err(e) = site() {
            problems.push(e);
        }
    }

    // the other DequantizeLinear nodes: of constants, or of integer tensors
    for (id, dq) in graph.node.iter().enumerate() {
        if !is_op(dq, "DequantizeLinear") || removed.contains(&id) {
            continue;
        }
        let label = ir::node_label(dq, id);
        let (Some(x), Some(out)) = (dq.input.first(), dq.output.first()) else {
            continue;
        };
        match simulate_dequantize(&index, &mut b, dq, &label, (x, out), &mut constants) {
            Ok(()) => {
                removed.insert(id);
            }
            Err(e) => problems.push(e),
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    drop_unread_constants(graph, &index, &mut removed, &mut b.patch);
    let mut patch = b.patch;
    patch.remove = removed.into_iter().collect();
    patch.remove.sort_unstable();
    if ir::default_opset(model).unwrap_or(0) < 11 {
        patch.opset = Some(11); // Round
    }
    let mut out = model.clone();
    if let Some(g) = out.graph.as_mut() {
        // types of removed integer tensors would mislead the runtime; it infers the rest
        g.value_info.clear();
    }
    ir::apply(&mut out, patch).map_err(|e| format!("internal error: {e}"))?;
    Ok(Simulated {
        model: out,
        activations,
        constants,
    })
}

/// A QuantizeLinear `q` (`x` → `qout`) and the DequantizeLinear nodes reading it as float ops
/// (Div in float64, Round, clip, then each DequantizeLinear's Mul); the readers, with their
/// parameters.
fn simulate_pair(
    index: &Index,
    b: &mut Builder,
    q: &NodeProto,
    label: &str,
    (x, qout): (&String, &String),
) -> Result<Vec<(usize, Params)>, String> {
    let p = params(index, q, label)?;
    if p.scale.len() != 1 || ir::attr_int(q, "block_size").unwrap_or(0) != 0 {
        return Err(format!(
            "`{label}`: per-channel or block-wise activation quantization is not simulated"
        ));
    }
    let readers = index.consumers(qout);
    let mut dqs = Vec::new();
    for &(r, slot) in readers {
        let rn = index.node(r);
        if !is_op(rn, "DequantizeLinear") || slot != 0 {
            return Err(format!(
                "`{label}`: `{}` ({}) reads the quantized tensor `{qout}`: only QDQ models are simulated",
                ir::node_label(rn, r),
                rn.op_type()
            ));
        }
        let dp = params(index, rn, &ir::node_label(rn, r))?.uniform();
        if dp.scale.len() != 1 {
            return Err(format!(
                "`{}`: per-channel dequantization of an activation is not simulated",
                ir::node_label(rn, r)
            ));
        }
        dqs.push((r, dp));
    }
    // x / s as ONNX (and ONNX Runtime) computes it: one correctly rounded float32
    // division. tract turns a division by a constant into a product with its
    // reciprocal, which moves ties (x a multiple of s/2, common after an earlier
    // quantization) by an ulp; in float64 that product rounds to the same float32.
    let wide = b.cast(x, DataType::Double, x);
    let s64 = b.scalar64(f64::from(p.scale[0]));
    let quotient = b.op("Div", &[&wide, &s64], x, x);
    let mut t = b.cast(&quotient, DataType::Float, x);
    let quantized = match p.grid {
        Grid::Int(lo, hi) => {
            t = b.op("Round", &[&t], x, x);
            if p.zero_point[0] != 0 {
                let zp = b.scalar(p.zero_point[0] as f32);
                t = b.op("Add", &[&t, &zp], x, x);
            }
            b.clamp(&t, lo as f32, hi as f32, x)
        }
        Grid::Fp8 => {
            if index.is_graph_output(qout) {
                return Err(format!(
                    "`{label}`: a float8 graph output `{qout}` is not simulated"
                ));
            }
            b.round_to_fp8(&t, x)
        }
    };
    if index.is_graph_output(qout) {
        let name = b.names.fresh(&format!("{qout}_sim_cast"));
        let mut cast = node("Cast", &[&quantized], qout, name);
        let to = constant(index, q.input.get(2).map_or("", |s| s.as_str()))
            .map_or(DataType::Uint8 as i64, |z| i64::from(z.data_type()));
        cast.attribute.push(ir::int_attr("to", to));
        b.patch.nodes.push((Placement::After(x.clone()), cast));
    }
    for (r, dp) in &dqs {
        let out = &index.node(*r).output[0];
        b.dequantize_value(&quantized, dp, x, out);
    }
    Ok(dqs)
}

/// A DequantizeLinear not paired with a QuantizeLinear: of a constant (dequantized into an
/// initializer) or of a computed integer tensor (Cast, Sub, Mul).
fn simulate_dequantize(
    index: &Index,
    b: &mut Builder,
    dq: &NodeProto,
    label: &str,
    (x, out): (&String, &String),
    constants: &mut usize,
) -> Result<(), String> {
    let p = params(index, dq, label)?;
    let c = constant(index, x);
    // a computed tensor's per-axis parameters that repeat one value are per-tensor
    let p = if c.is_some() { p } else { p.uniform() };
    match c {
        Some(q) => {
            let values = dequantize(dq, label, q, &p)?;
            let dims: Vec<usize> = q
                .dims
                .iter()
                .map(|&d| usize::try_from(d).unwrap_or(0))
                .collect();
            b.patch
                .add_initializers
                .push(f32_tensor(out, &dims, &values));
            *constants += 1;
        }
        None if p.grid == Grid::Fp8 => {
            return Err(format!(
                "`{label}`: dequantizing a computed float8 tensor is not simulated"
            ));
        }
        None if p.scale.len() == 1 => {
            let name = b.names.fresh(&format!("{out}_sim_cast"));
            let cast_out = b.names.fresh(&format!("{out}_sim_float"));
            let mut cast = node("Cast", &[x], &cast_out, name);
            cast.attribute.push(cast_to(DataType::Float));
            b.patch.nodes.push((Placement::After(x.clone()), cast));
            b.dequantize_value(&cast_out, &p, x, out);
        }
        None => {
            return Err(format!(
                "`{label}`: per-channel dequantization of a computed tensor is not simulated"
            ));
        }
    }
    Ok(())
}

/// Constants (integer values, scales, zero-points) that only removed nodes read: their
/// producers are removed too, or the initializers dropped.
fn drop_unread_constants(
    graph: &crate::proto::GraphProto,
    index: &Index,
    removed: &mut HashSet<usize>,
    patch: &mut Patch,
) {
    let mut dropped: Vec<&str> = removed
        .iter()
        .flat_map(|&id| graph.node[id].input.iter())
        .map(|s| s.as_str())
        .filter(|name| constant(index, name).is_some())
        .collect();
    dropped.sort_unstable();
    dropped.dedup();
    dropped.retain(|name| {
        !index.is_graph_output(name)
            && index
                .consumers(name)
                .iter()
                .all(|(r, _)| removed.contains(r))
    });
    for name in dropped {
        match index.producer(name) {
            Some((p, _)) => {
                removed.insert(p);
            }
            None => patch.remove_initializers.push(name.to_string()),
        }
    }
}

mod builder;
#[cfg(test)]
mod tests;

use builder::{Builder, cast_to, node};
