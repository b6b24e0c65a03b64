//! Pass `quantize-weights`: every planned weight becomes an int8 initializer read through a
//! DequantizeLinear (per channel when the plan gives an axis); the float initializer is removed
//! unless something else still reads it. Planned biases become int32 with scale `s_x · s_w`
//! (per channel with the weight); a weight channel whose bias would overflow int32 gets a
//! larger scale first.

use std::collections::HashMap;

use crate::error::Error;
use crate::ir::{Index, Names, Patch, Placement};
use crate::onnx::tensor::{
    f32_data, f32_tensor, fp8_tensor, i4_tensor, i8_tensor, i32_tensor, is_external, u4_tensor,
};
use crate::params::pairs::{self, CpuOverflow, PairFix};
use crate::params::{
    Int4Layout, WeightType, quantize_weight, quantize_weight_4bit, quantize_weight_fp8,
};
use crate::policy::{BiasSite, QuantPlan};
use crate::proto::{ModelProto, TensorProto};

use super::{ActivationParams, IdMap, QdqNames, WeightReport, bias};

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}

/// Smallest weight scale per channel that keeps each planned bias inside int32.
fn bias_floors(
    index: &Index,
    plan: &QuantPlan,
    act: &ActivationParams,
) -> Result<HashMap<String, Vec<f32>>, Error> {
    let mut floors: HashMap<String, Vec<f32>> = HashMap::new();
    for b in &plan.biases {
        let bias = f32_data(
            index
                .initializer(&b.bias)
                .ok_or_else(|| internal(format!("bias `{}` vanished", b.bias)))?,
        )
        .map_err(internal)?;
        let s_x = act
            .tensors
            .get(&b.activation)
            .ok_or_else(|| internal(format!("no parameters for `{}`", b.activation)))?
            .1
            .scale;
        let f = floors
            .entry(b.weight.clone())
            .or_insert_with(|| vec![0.0; bias.len()]);
        for (floor, &v) in f.iter_mut().zip(&bias) {
            *floor =
                floor.max((f64::from(v.abs()) / (f64::from(s_x) * f64::from(i32::MAX - 1))) as f32);
        }
    }
    Ok(floors)
}

pub(super) fn quantize_weights(
    model: &ModelProto,
    plan: &QuantPlan,
    act: &ActivationParams,
    ids: &IdMap,
    external: super::ExternalValues,
) -> Result<(Patch, Vec<WeightReport>), Error> {
    let graph = crate::ir::graph(model);
    let index = Index::new(graph);
    let mut names = Names::new(&index);
    let mut patch = Patch::default();
    let mut reports = Vec::new();
    let floors = bias_floors(&index, plan, act)?;
    let mut all_scales: HashMap<String, Vec<f32>> = HashMap::new();
    // corrected values of the planned (int32) biases, by bias
    let mut biases: HashMap<String, Vec<f32>> = HashMap::new();
    for site in &plan.weights {
        let w = site.initializer.as_str();
        let (data, dims, chain) = weight_values(&index, w, external)?;
        let floor = floors.get(w).map_or(&[][..], |f| f.as_slice());
        let n = QdqNames::new(&mut names, w);
        let mut pair_fix = None;
        // the values the rounded weight stands for, where bias correction needs them
        let corrects = act.input_means.contains_key(w);
        let mut hat = None;
        let mut gptq = None;
        let e = match site.dtype {
            WeightType::Int8 => {
                let mut q = quantize_weight(&data, &dims, site.axis, floor, act.f16_scales);
                gptq = refine(&index, ids, site, (&data, &dims), &mut q, (-127, 127), act)?;
                pair_fix = keep_pairs(&index, ids, plan, site, &data, &dims, &mut q, act);
                hat = corrects.then(|| bias::dequantized(&q, &dims, None));
                let param_dims = site.axis.map(|_| vec![q.scales.len()]).unwrap_or_default();
                Encoded {
                    values: i8_tensor(&n.quantized, &dims, &q.values),
                    zeros: i8_tensor(&n.zero_point, &param_dims, &vec![0; q.scales.len()]),
                    scales: q.scales,
                    param_dims,
                    axis: site.axis,
                }
            }
            WeightType::Fp8 => {
                let (bytes, scales) = quantize_weight_fp8(&data, &dims, site.axis, act.f16_scales);
                let param_dims = site.axis.map(|_| vec![scales.len()]).unwrap_or_default();
                Encoded {
                    values: fp8_tensor(&n.quantized, &dims, &bytes),
                    zeros: fp8_tensor(&n.zero_point, &param_dims, &vec![0; scales.len()]),
                    scales,
                    param_dims,
                    axis: site.axis,
                }
            }
            WeightType::Int4 | WeightType::Uint4 => {
                let range = if site.dtype == WeightType::Uint4 {
                    (0, 15)
                } else {
                    (-8, 7)
                };
                let refine = |q: &mut crate::params::QuantizedWeight| {
                    refine(&index, ids, site, (&data, &dims), q, range, act)
                };
                let (e, q, g) = encode_4bit(site, &data, &dims, floor, act, &n, &refine)?;
                gptq = g;
                hat = corrects.then(|| bias::dequantized(&q, &dims, site.block));
                e
            }
        };
        let corrected = match (hat, act.input_means.get(w)) {
            (Some(hat), Some(means)) => correct_bias(
                &index,
                &mut names,
                ids,
                plan,
                site,
                (&data, &hat, &dims),
                means,
                &mut patch,
                &mut biases,
            )?,
            _ => None,
        };
        patch.add_initializers.push(e.values);
        patch
            .add_initializers
            .push(f32_tensor(&n.scale, &e.param_dims, &e.scales));
        patch.add_initializers.push(e.zeros);
        let mut dq = n.node(&mut names, w, "DequantizeLinear", e.axis);
        if let Some((_, size)) = site.block {
            dq.attribute
                .push(crate::ir::int_attr("block_size", size as i64));
        }
        let float_kept = wire(&index, ids, site, chain, dq, &n.dequantized, &mut patch);
        reports.push(WeightReport {
            name: w.to_string(),
            dims,
            dtype: site.dtype,
            block_size: site.block.map(|b| b.1),
            axis: e.axis,
            scales: e.scales.len(),
            float_kept,
            decided_by: site.decided_by.clone(),
            pairs: pair_fix,
            bias_correction: corrected,
            gptq,
        });
        all_scales.insert(w.to_string(), e.scales);
    }
    for b in &plan.biases {
        let values = biases.get(&b.bias).cloned();
        quantize_bias(
            &index,
            &mut names,
            b,
            act,
            &all_scales,
            ids,
            values,
            &mut patch,
        )?;
    }
    Ok((patch, reports))
}

/// A weight's quantized form: its scales and their dims, the DequantizeLinear's axis, the
/// values and zero-points as initializers.
struct Encoded {
    scales: Vec<f32>,
    param_dims: Vec<usize>,
    axis: Option<usize>,
    values: TensorProto,
    zeros: TensorProto,
}

/// A weight's float values, dims, and the nodes computing it (a constant computed by nodes).
type WeightValues = (Vec<f32>, Vec<usize>, Option<Vec<usize>>);

/// The float values and dims of weight `w`: an initializer (payload sizes checked by
/// `ir::verify`; read through `external` when still on disk), or a constant computed by
/// nodes, with the chain of nodes computing it.
fn weight_values(
    index: &Index,
    w: &str,
    external: super::ExternalValues,
) -> Result<WeightValues, Error> {
    match index.initializer(w) {
        Some(init) => {
            let data = if is_external(init) {
                external(init)?
            } else {
                f32_data(init).map_err(|e| internal(format!("weight `{w}` {e}")))?
            };
            Ok((data, init.dims.iter().map(|&d| d as usize).collect(), None))
        }
        None => {
            let (c, chain) = crate::ir::constant::evaluate(index, w)
                .ok_or_else(|| internal(format!("planned weight `{w}` is not a constant")))?;
            Ok((c.data, c.dims, Some(chain)))
        }
    }
}

/// int4 / uint4 weights per tensor, per channel or in blocks.
fn encode_4bit(
    site: &crate::policy::WeightSite,
    data: &[f32],
    dims: &[usize],
    floor: &[f32],
    act: &ActivationParams,
    n: &QdqNames,
    refine: &dyn Fn(
        &mut crate::params::QuantizedWeight,
    ) -> Result<Option<super::GptqReport>, Error>,
) -> Result<
    (
        Encoded,
        crate::params::QuantizedWeight,
        Option<super::GptqReport>,
    ),
    Error,
> {
    let layout = match (site.block, site.axis) {
        (Some((axis, size)), _) => Int4Layout::Blocks { axis, size },
        (None, Some(a)) => Int4Layout::PerChannel(a),
        (None, None) => Int4Layout::PerTensor,
    };
    let unsigned = site.dtype == WeightType::Uint4;
    let mut q = quantize_weight_4bit(
        data,
        dims,
        layout,
        floor,
        act.f16_scales,
        act.clip_search,
        unsigned,
    );
    let gptq = refine(&mut q)?;
    let param_dims = layout.scale_dims(dims);
    let (values, zeros) = if unsigned {
        let zps: Vec<i8> = q.zero_points.iter().map(|&z| z as i8).collect();
        (
            u4_tensor(&n.quantized, dims, &q.values),
            u4_tensor(&n.zero_point, &param_dims, &zps),
        )
    } else {
        (
            i4_tensor(&n.quantized, dims, &q.values),
            i4_tensor(&n.zero_point, &param_dims, &vec![0; q.scales.len()]),
        )
    };
    let e = Encoded {
        scales: q.scales.clone(),
        param_dims,
        axis: q.axis,
        values,
        zeros,
    };
    Ok((e, q, gptq))
}

/// The weight's DequantizeLinear `dq` placed before its first planned reader, every planned
/// reader rewired to `dequantized`; the float weight (or the nodes computing it) removed
/// unless something else still reads it. Whether the float weight stays.
fn wire(
    index: &Index,
    ids: &IdMap,
    site: &crate::policy::WeightSite,
    chain: Option<Vec<usize>>,
    dq: crate::proto::NodeProto,
    dequantized: &str,
    patch: &mut Patch,
) -> bool {
    let w = site.initializer.as_str();
    let consumers: Vec<(usize, usize)> = site
        .consumers
        .iter()
        .map(|&(id, slot)| (ids.get(id), slot))
        .collect();
    let first = consumers
        .iter()
        .map(|c| c.0)
        .min()
        .expect("a weight site has consumers");
    patch.nodes.push((Placement::Before(first), dq));
    patch.rewire.extend(
        consumers
            .iter()
            .map(|&(id, slot)| (id, slot, dequantized.to_string())),
    );
    match chain {
        Some(chain) => !prune_chain(index, &chain, &consumers, patch),
        None => {
            let others = index.consumers(w).iter().any(|c| !consumers.contains(c));
            let kept = others || index.is_graph_output(w) || index.is_captured(w);
            if !kept {
                patch.remove_initializers.push(w.to_string());
            }
            kept
        }
    }
}

/// Keeps the int8 pairs of `q` inside int16 for every op that reads the weight with a quantized
/// data input (the ones an int8 kernel computes), as `act.cpu_overflow` asks.
#[allow(clippy::too_many_arguments)]
fn keep_pairs(
    index: &Index,
    ids: &IdMap,
    plan: &QuantPlan,
    site: &crate::policy::WeightSite,
    data: &[f32],
    dims: &[usize],
    q: &mut crate::params::QuantizedWeight,
    act: &ActivationParams,
) -> Option<PairFix> {
    if act.cpu_overflow == CpuOverflow::None {
        return None;
    }
    let mut total: Option<PairFix> = None;
    for &(id, slot) in &site.consumers {
        let node = index.node(ids.get(id));
        let data_slot = usize::from(slot == 0);
        let quantized = node
            .input
            .get(data_slot)
            .is_some_and(|x| plan.site(x).is_some());
        if !quantized {
            continue;
        }
        let Some(pairing) = crate::check::cpu::pairing(node, dims, slot) else {
            continue;
        };
        let Some(f) = pairs::fix(data, dims, q, &pairing, act.cpu_overflow, act.f16_scales) else {
            continue;
        };
        total = Some(match total {
            None => f,
            Some(t) => PairFix {
                pairs: t.pairs + f.pairs,
                changed: t.changed + f.changed,
                rescaled: t.rescaled.max(f.rescaled),
                sqnr_after_db: f.sqnr_after_db,
                ..t
            },
        });
    }
    total
}

/// Bias `b` as int32 (its `corrected` values when bias correction changed them).
#[allow(clippy::too_many_arguments)]
fn quantize_bias(
    index: &Index,
    names: &mut Names,
    b: &BiasSite,
    act: &ActivationParams,
    scales: &HashMap<String, Vec<f32>>,
    ids: &IdMap,
    corrected: Option<Vec<f32>>,
    patch: &mut Patch,
) -> Result<(), Error> {
    let bias = match corrected {
        Some(v) => v,
        None => f32_data(
            index
                .initializer(&b.bias)
                .ok_or_else(|| internal(format!("bias `{}` vanished", b.bias)))?,
        )
        .map_err(internal)?,
    };
    let s_x = act.tensors[&b.activation].1.scale;
    let s_w = scales.get(&b.weight).ok_or_else(|| {
        internal(format!(
            "weight `{}` of bias `{}` was not quantized",
            b.weight, b.bias
        ))
    })?;
    if s_w.len() != 1 && s_w.len() != bias.len() {
        return Err(internal(format!(
            "bias `{}` has {} values for {} weight scales",
            b.bias,
            bias.len(),
            s_w.len()
        )));
    }
    // The scale runtimes derive (s_x · s_w in float32), and the bias quantized with it.
    let bias_scales: Vec<f32> = s_w.iter().map(|&s| s_x * s).collect();
    let values: Vec<i32> = bias
        .iter()
        .enumerate()
        .map(|(c, &v)| {
            let s = bias_scales[if bias_scales.len() == 1 { 0 } else { c }];
            (f64::from(v) / f64::from(s))
                .round_ties_even()
                .clamp(f64::from(i32::MIN + 1), f64::from(i32::MAX - 1)) as i32
        })
        .collect();
    let per_channel = bias_scales.len() > 1;
    let param_dims: Vec<usize> = if per_channel {
        vec![bias_scales.len()]
    } else {
        vec![]
    };
    let n = QdqNames::new(names, &b.bias);
    patch
        .add_initializers
        .push(i32_tensor(&n.quantized, &[bias.len()], &values));
    patch
        .add_initializers
        .push(f32_tensor(&n.scale, &param_dims, &bias_scales));
    patch.add_initializers.push(i32_tensor(
        &n.zero_point,
        &param_dims,
        &vec![0; bias_scales.len()],
    ));
    let node = ids.get(b.node);
    patch.nodes.push((
        Placement::Before(node),
        n.node(names, &b.bias, "DequantizeLinear", per_channel.then_some(0)),
    ));
    patch.rewire.push((node, 2, n.dequantized.clone()));
    patch.remove_initializers.push(b.bias.clone());
    Ok(())
}

/// GPTQ's levels for `q` (the nearest rounding of `w`, levels within `range`), when the
/// statistics hold the Gram matrix of the one layer reading the weight.
fn refine(
    index: &Index,
    ids: &IdMap,
    site: &crate::policy::WeightSite,
    (data, dims): (&[f32], &[usize]),
    q: &mut crate::params::QuantizedWeight,
    range: (i32, i32),
    act: &ActivationParams,
) -> Result<Option<super::GptqReport>, Error> {
    let (Some(gram), [(id, 1)]) = (act.grams.get(&site.initializer), &site.consumers[..]) else {
        return Ok(None);
    };
    let Some(rows) = super::rows_of(index.node(ids.get(*id))) else {
        return Ok(None);
    };
    let nearest = q.values.clone();
    let at = crate::params::scale_index(dims, q, site.block);
    let (before, after) = crate::params::gptq::gptq(data, dims, rows, q, &at, range, gram)
        .map_err(|e| internal(format!("GPTQ on `{}`: {e}", site.initializer)))?;
    Ok(Some(super::GptqReport {
        nearest_sqnr_db: before.sqnr_db(),
        gptq_sqnr_db: after.sqnr_db(),
        changed: nearest
            .iter()
            .zip(&q.values)
            .filter(|(a, b)| a != b)
            .count(),
    }))
}

/// Bias correction of the one layer reading `site`'s weight (`w`: float values, rounded values,
/// dims), from its mean input patch: a planned (int32) bias's corrected values go to `biases`
/// for its quantization; a float bias is replaced by a corrected copy; a Conv or Gemm without
/// bias gains one. `None` when the layer is not one bias correction knows.
#[allow(clippy::too_many_arguments)]
fn correct_bias(
    index: &Index,
    names: &mut Names,
    ids: &IdMap,
    plan: &QuantPlan,
    site: &crate::policy::WeightSite,
    (data, hat, dims): (&[f32], &[f64], &[usize]),
    means: &[f64],
    patch: &mut Patch,
    biases: &mut HashMap<String, Vec<f32>>,
) -> Result<Option<bias::BiasCorrection>, Error> {
    let [(id, 1)] = site.consumers[..] else {
        return Ok(None);
    };
    let id = ids.get(id);
    let node = index.node(id);
    let Some(shift) =
        bias::rows_of(node).and_then(|rows| bias::shift(rows, data, hat, dims, means))
    else {
        return Ok(None);
    };
    let n = shift.len();
    // a MatMul's bias is the constant an Add after it adds (PyTorch's Linear, exported): its
    // values change under the same name (the plan may quantize it as the Add's input)
    let added = matmul_bias(index, node, n);
    let (id, node, existing) = match added {
        Some((add, slot)) => (add, index.node(add), index.node(add).input.get(slot)),
        None => (id, node, node.input.get(2).filter(|b| !b.is_empty())),
    };
    let old = match existing {
        Some(b) => match index.initializer(b).map(f32_data) {
            Some(Ok(v)) if v.len() == n => v,
            // a broadcast or computed bias: left alone
            _ => return Ok(None),
        },
        None if node.op_type() == "MatMul" => return Ok(None),
        None => vec![0.0; n],
    };
    let new: Vec<f32> = old
        .iter()
        .zip(&shift)
        .map(|(&b, &s)| (f64::from(b) + s) as f32)
        .collect();
    let report = bias::BiasCorrection {
        shift_rms: (shift.iter().map(|s| s * s).sum::<f64>() / n.max(1) as f64).sqrt(),
        shift_max: shift.iter().fold(0f64, |m, s| m.max(s.abs())),
        bias_added: existing.is_none(),
    };
    match existing {
        Some(b) if plan.biases.iter().any(|s| &s.bias == b) => {
            biases.insert(b.clone(), new);
        }
        Some(b) if added.is_some() => {
            let dims: Vec<usize> = index
                .initializer(b)
                .expect("checked")
                .dims
                .iter()
                .map(|&d| d as usize)
                .collect();
            patch.remove_initializers.push(b.clone());
            patch.add_initializers.push(f32_tensor(b, &dims, &new));
        }
        Some(b) => {
            let name = names.fresh(&format!("{b}_corrected"));
            patch.add_initializers.push(f32_tensor(&name, &[n], &new));
            patch.rewire.push((id, 2, name));
            let only_here = index.consumers(b).iter().all(|c| c.0 == id)
                && !index.is_graph_output(b)
                && !index.is_captured(b)
                && !index.is_graph_input(b);
            if only_here {
                patch.remove_initializers.push(b.clone());
            }
        }
        None => {
            let name = names.fresh(&format!("{}_bias_corrected", site.initializer));
            patch.add_initializers.push(f32_tensor(&name, &[n], &new));
            let mut with_bias = node.clone();
            with_bias.input.resize(2, String::new());
            with_bias.input.push(name);
            patch.replace.push((id, with_bias));
        }
    }
    Ok(Some(report))
}

/// The Add after a MatMul `node` (its only reader) adding a float constant of `n` values (`[n]`
/// or `[1, n]`), and that constant's input slot.
fn matmul_bias(index: &Index, node: &crate::proto::NodeProto, n: usize) -> Option<(usize, usize)> {
    if node.op_type() != "MatMul" {
        return None;
    }
    let out = node.output.first()?;
    let [(add, slot)] = index.consumers(out) else {
        return None;
    };
    let add_node = index.node(*add);
    if add_node.op_type() != "Add" || index.is_graph_output(out) || index.is_captured(out) {
        return None;
    }
    let other = 1 - *slot;
    let name = add_node.input.get(other)?;
    let t = index.initializer(name)?;
    let dims: Vec<i64> = t.dims.iter().copied().filter(|&d| d != 1).collect();
    let own = index.consumers(name).len() == 1
        && !index.is_graph_input(name)
        && !index.is_graph_output(name)
        && !index.is_captured(name);
    (dims == [n as i64] && t.dims.last() == Some(&(n as i64)) && own).then_some((*add, other))
}

/// Removes the nodes computing a constant weight that nothing reads any more; whether all went.
pub(super) fn prune_chain(
    index: &Index,
    chain: &[usize],
    quantized: &[(usize, usize)],
    patch: &mut Patch,
) -> bool {
    let mut removed: Vec<usize> = Vec::new();
    for &id in chain.iter().rev() {
        let node = index.node(id);
        let unread = node.output.iter().all(|o| {
            !index.is_graph_output(o)
                && !index.is_captured(o)
                && index
                    .consumers(o)
                    .iter()
                    .all(|c| quantized.contains(c) || removed.contains(&c.0))
        });
        if !unread {
            break;
        }
        removed.push(id);
    }
    let all = removed.len() == chain.len();
    patch.remove.extend(removed);
    all
}
