//! Pass `insert-qdq`: a QuantizeLinear → DequantizeLinear pair on every planned activation,
//! read by the planned consumers (or, for the output of a complete node unit, by every reader);
//! other readers keep the float tensor. A planned constant (an operand of a complete unit, an
//! initializer or the output of Constant-like nodes) is stored quantized instead and read
//! through a DequantizeLinear, like a weight: OpenVINO's low-precision passes reject a
//! QuantizeLinear on a constant.

use crate::error::Error;
use crate::ir::{Index, Names, Patch, Placement};
use crate::onnx::tensor::{f32_data, f32_tensor, fp8_tensor, i8_tensor, i16_tensor, u8_tensor};
use crate::params::{QParams, QType, quantize, to_fp8};
use crate::policy::{ActivationSite, QuantPlan};
use crate::proto::{ModelProto, NodeProto};

use super::{ActivationParams, IdMap, QdqNames};

pub(super) fn insert_qdq(
    model: &ModelProto,
    plan: &QuantPlan,
    act: &ActivationParams,
    ids: &IdMap,
) -> Result<Patch, Error> {
    let graph = crate::ir::graph(model);
    let index = Index::new(graph);
    let mut x = Insert {
        index: &index,
        ids,
        act,
        names: Names::new(&index),
        patch: Patch::default(),
    };
    for site in &plan.activations {
        let t = site.tensor.as_str();
        let &(qtype, p) = act
            .tensors
            .get(t)
            .ok_or_else(|| Error::Internal(format!("no parameters for planned tensor `{t}`")))?;
        let n = QdqNames::new(&mut x.names, t);
        x.patch
            .add_initializers
            .push(f32_tensor(&n.scale, &[], &[p.scale]));
        // a float8 zero-point is 0, whose byte is 0
        x.patch
            .add_initializers
            .push(typed_tensor(&n.zero_point, &[], qtype, &[p.zero_point]));
        let dq = n.node(&mut x.names, t, "DequantizeLinear", None);
        // a constant (an initializer, or computed by Constant-like nodes)
        let constant = match index.initializer(t) {
            Some(init) => {
                let data =
                    f32_data(init).map_err(|e| Error::Internal(format!("constant `{t}` {e}")))?;
                let dims: Vec<usize> = init.dims.iter().map(|&d| d as usize).collect();
                Some((data, dims, None))
            }
            None => crate::ir::constant::evaluate(&index, t)
                .map(|(c, chain)| (c.data, c.dims, Some(chain))),
        };
        if let Some((data, dims, chain)) = constant {
            let q = quantized_tensor(&n.quantized, &dims, &data, qtype, p);
            x.constant(site, &n, dq, q, chain);
            continue;
        }
        let q = n.node(&mut x.names, t, "QuantizeLinear", None);
        if site.all_consumers && index.is_graph_output(t) {
            x.graph_output(t, q, dq)?;
            continue;
        }
        x.patch.nodes.push((Placement::After(t.into()), q));
        x.patch.nodes.push((Placement::After(t.into()), dq));
        x.readers(site, &n, (qtype, p));
    }
    Ok(x.patch)
}

/// The pass under way.
struct Insert<'a> {
    index: &'a Index<'a>,
    ids: &'a IdMap,
    act: &'a ActivationParams,
    names: Names,
    patch: Patch,
}

impl Insert<'_> {
    /// A planned constant: stored quantized (`q`), read through `dq` by its planned readers;
    /// the float constant (or the nodes computing it) goes when nothing else reads it.
    fn constant(
        &mut self,
        site: &ActivationSite,
        n: &QdqNames,
        dq: NodeProto,
        q: crate::proto::TensorProto,
        chain: Option<Vec<usize>>,
    ) {
        let t = site.tensor.as_str();
        let index = self.index;
        self.patch.add_initializers.push(q);
        let mine: Vec<(usize, usize)> = site
            .consumers
            .iter()
            .map(|&(id, slot)| (self.ids.get(id), slot))
            .collect();
        let first = mine.iter().map(|r| r.0).min().expect("a site has readers");
        self.patch.nodes.push((Placement::Before(first), dq));
        match &chain {
            Some(chain) => {
                super::weights::prune_chain(index, chain, &mine, &mut self.patch);
            }
            None => {
                if index.consumers(t).iter().all(|c| mine.contains(c))
                    && !index.is_graph_output(t)
                    && !index.is_captured(t)
                {
                    self.patch.remove_initializers.push(t.to_string());
                }
            }
        }
        self.patch.rewire.extend(
            mine.into_iter()
                .map(|(id, slot)| (id, slot, n.dequantized.clone())),
        );
    }

    /// A node unit's output that is a graph output keeps its name, now written by the
    /// DequantizeLinear: the producer writes a new tensor the QuantizeLinear reads, and every
    /// reader follows the name.
    fn graph_output(&mut self, t: &str, mut q: NodeProto, mut dq: NodeProto) -> Result<(), Error> {
        let (producer, slot) = self
            .index
            .producer(t)
            .ok_or_else(|| Error::Internal(format!("graph output `{t}` has no producer")))?;
        let pre = self.names.fresh(&format!("{t}_float"));
        let mut node = self.index.node(producer).clone();
        node.output[slot] = pre.clone();
        self.patch.replace.push((producer, node));
        q.input[0] = pre.clone();
        dq.output[0] = t.to_string();
        self.patch.nodes.push((Placement::After(pre.clone()), q));
        self.patch.nodes.push((Placement::After(pre), dq));
        Ok(())
    }

    /// The readers of an activation's dequantized tensor: the planned ones (every one for a
    /// node unit's output); a float Conv/ConvTranspose/Gemm reads it through a per-axis
    /// DequantizeLinear (`placement.float_reads_per_axis`).
    fn readers(&mut self, site: &ActivationSite, n: &QdqNames, (qtype, p): (QType, QParams)) {
        let t = site.tensor.as_str();
        let index = self.index;
        let mut readers: Vec<(usize, usize)> = site
            .consumers
            .iter()
            .map(|&(id, slot)| (self.ids.get(id), slot))
            .collect();
        if site.all_consumers {
            let more: Vec<(usize, usize)> = index
                .consumers(t)
                .iter()
                .copied()
                .filter(|r| !readers.contains(r))
                .collect();
            readers.extend(more);
        }
        let mut per_axis: Option<(usize, String)> = None;
        for (id, slot) in readers {
            let channels = (self.act.float_reads_per_axis && slot == 0)
                .then(|| float_weighted_channels(index, index.node(id)))
                .flatten()
                .filter(|&c| per_axis.as_ref().is_none_or(|(pc, _)| *pc == c));
            let Some(c) = channels else {
                self.patch.rewire.push((id, slot, n.dequantized.clone()));
                continue;
            };
            if per_axis.is_none() {
                let m = QdqNames {
                    scale: self.names.fresh(&format!("{t}_per_axis_scale")),
                    zero_point: self.names.fresh(&format!("{t}_per_axis_zero_point")),
                    quantized: n.quantized.clone(),
                    dequantized: self.names.fresh(&format!("{t}_per_axis_dequantized")),
                };
                self.patch
                    .add_initializers
                    .push(f32_tensor(&m.scale, &[c], &vec![p.scale; c]));
                self.patch.add_initializers.push(typed_tensor(
                    &m.zero_point,
                    &[c],
                    qtype,
                    &vec![p.zero_point; c],
                ));
                let dq = m.node(
                    &mut self.names,
                    &format!("{t}_per_axis"),
                    "DequantizeLinear",
                    Some(1),
                );
                self.patch.nodes.push((Placement::After(t.into()), dq));
                per_axis = Some((c, m.dequantized));
            }
            let (_, name) = per_axis.as_ref().expect("set above");
            self.patch.rewire.push((id, slot, name.clone()));
        }
    }
}

/// The channel count of axis 1 of the data input of a float Conv, ConvTranspose or Gemm (its
/// weight a float initializer), which ONNX Runtime's `WeightBiasQuantization` would quantize
/// per tensor if it read a per-tensor DequantizeLinear; `None` for anything else, and for one
/// channel (a one-element scale counts as per tensor there).
fn float_weighted_channels(index: &Index, node: &crate::proto::NodeProto) -> Option<usize> {
    use crate::proto::tensor_proto::DataType;
    let op = node.op_type();
    if !crate::ir::is_default_domain(node.domain())
        || !matches!(op, "Conv" | "ConvTranspose" | "Gemm")
    {
        return None;
    }
    let w = index.initializer(node.input.get(1)?)?;
    if w.data_type() != DataType::Float as i32 || w.dims.len() < 2 {
        return None;
    }
    let dim = |i: usize| usize::try_from(w.dims[i]).ok();
    let int = |name: &str, default: i64| crate::ir::attr_int(node, name).unwrap_or(default);
    let c = match op {
        "Conv" => dim(1)? * usize::try_from(int("group", 1)).ok()?,
        "ConvTranspose" => dim(0)?,
        _ if int("transA", 0) != 0 => return None,
        _ if int("transB", 0) != 0 => dim(1)?,
        _ => dim(0)?,
    };
    (c > 1).then_some(c)
}

/// `data` quantized to `qtype` with `p`, as an initializer.
fn quantized_tensor(
    name: &str,
    dims: &[usize],
    data: &[f32],
    qtype: QType,
    p: QParams,
) -> crate::proto::TensorProto {
    let range = qtype.range();
    let q: Vec<i32> = data
        .iter()
        .map(|&x| match qtype {
            QType::Fp8 => i32::from(to_fp8(x / p.scale)),
            _ => quantize(x, p, range),
        })
        .collect();
    typed_tensor(name, dims, qtype, &q)
}

/// A `qtype` initializer of `q`: integers of the type's range, or float8 bytes for fp8.
fn typed_tensor(name: &str, dims: &[usize], qtype: QType, q: &[i32]) -> crate::proto::TensorProto {
    let bytes = || q.iter().map(|&v| v as u8).collect::<Vec<u8>>();
    match qtype {
        QType::Int8 => i8_tensor(name, dims, &q.iter().map(|&v| v as i8).collect::<Vec<_>>()),
        QType::Int16 => i16_tensor(name, dims, &q.iter().map(|&v| v as i16).collect::<Vec<_>>()),
        QType::Uint8 => u8_tensor(name, dims, &bytes()),
        QType::Fp8 => fp8_tensor(name, dims, &bytes()),
    }
}
