//! Float against quantized: both models run in tract on the same samples, the quantized one
//! through [`crate::accuracy::simulate`] (ONNX's exact Q/DQ arithmetic), compared output by output and,
//! on request, at every quantized tensor.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde::Serialize;

use crate::accuracy::{
    ErrorStats, LabelMetrics, LayerMetrics, OutputMetrics, Top1, sort_worst_first,
};
use crate::calib::npy::NamedArray;
use crate::calib::{
    Collect, Dataset, Floats, InputSpec, Part, RunOptions, Runner, Sample, run_models,
};
use crate::error::{CalibError, Error, ModelError, UsageError};
use crate::proto::ModelProto;

/// A model and where it came from (for messages and relative external data).
#[derive(Clone, Copy)]
pub struct Source<'a> {
    pub model: &'a ModelProto,
    pub path: &'a Path,
}

/// Labels of the data, one per output row.
#[derive(Clone, Copy)]
pub struct Labels<'a> {
    pub path: &'a Path,
    pub values: &'a [i64],
}

/// The comparison of a quantized model with its float original.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub samples: usize,
    pub outputs: Vec<OutputMetrics>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<LabelMetrics>,
    /// Per quantized tensor, worst first (empty unless asked for).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerMetrics>,
    /// Q → DQ pairs and dequantized constants simulated.
    pub simulated_activations: usize,
    pub simulated_constants: usize,
    #[serde(skip)]
    pub layers_in_graph_order: Vec<LayerMetrics>,
    #[serde(skip)]
    pub top1: Option<Top1>,
    /// The quantized model's simulated outputs, samples stacked on a new axis 0 (when kept).
    #[serde(skip)]
    pub saved_outputs: Vec<NamedArray>,
}

impl Comparison {
    /// The lowest SQNR over the outputs (`None`: every output identical).
    pub fn worst_sqnr(&self) -> Option<f64> {
        self.outputs
            .iter()
            .filter_map(|o| o.sqnr_db)
            .min_by(|a, b| a.total_cmp(b))
    }
}

/// The quantized model as float ops tract runs, or an error naming what cannot be simulated.
pub fn simulated(q: Source) -> Result<crate::accuracy::simulate::Simulated, Error> {
    crate::accuracy::simulate::simulate(q.model).map_err(|e| {
        ModelError::Unsupported {
            path: q.path.to_path_buf(),
            what: format!("quantization that cannot be simulated ({e})"),
        }
        .into()
    })
}

/// `model` with BatchNormalization folded into Convs (tract runs it faster) when no tensor in
/// `keep` disappears by it.
pub fn runnable(model: &ModelProto, keep: &[String]) -> Result<ModelProto, Error> {
    let (folded, n) = crate::rewrite::fold_batchnorm(model)?;
    if n == 0 {
        return Ok(folded);
    }
    let names = crate::ir::Index::new(folded.graph.as_ref().expect("graph")).names();
    Ok(if keep.iter().all(|k| names.contains(k)) {
        folded
    } else {
        model.clone()
    })
}

fn graph_outputs(m: &ModelProto) -> Vec<String> {
    m.graph
        .as_ref()
        .map(|g| g.output.iter().map(|o| o.name().to_string()).collect())
        .unwrap_or_default()
}

/// Names selected from a model, deduplicated, with the position of each request.
#[derive(Default)]
struct Selection {
    names: Vec<String>,
    at: HashMap<String, usize>,
}

impl Selection {
    fn add(&mut self, name: &str) -> usize {
        if let Some(&i) = self.at.get(name) {
            return i;
        }
        self.names.push(name.to_string());
        self.at.insert(name.to_string(), self.names.len() - 1);
        self.names.len() - 1
    }
}

/// Where a layer's three values sit among the selected outputs.
#[derive(Clone, Copy)]
struct LayerSlots {
    reference: usize,
    input: usize,
    output: usize,
}

struct Collector<'a> {
    outputs: usize,
    layers: &'a [LayerSlots],
    /// The output whose rows are classified (last axis of 2+ entries), with labels if given.
    labelled_output: Option<usize>,
    labels: Option<Labels<'a>>,
    errors: Vec<ErrorStats>,
    top1: Vec<Option<Top1>>,
    layer_acc: Vec<ErrorStats>,
    layer_local: Vec<ErrorStats>,
    names: &'a [String],
    quant_path: &'a Path,
    /// (sample, each output's shape and values) when outputs are kept.
    kept: Option<Vec<(usize, Vec<Values>)>>,
    /// The float model's outputs computed before: then only the quantized model runs.
    cached: Option<&'a Reference>,
}

/// One tensor's shape and values.
pub type Values = (Vec<usize>, Vec<f32>);

impl Collect for Collector<'_> {
    fn collect(&mut self, sample: &Sample, outputs: &[Vec<Floats>]) -> Result<(), Error> {
        match self.cached {
            None => {
                let (r, t) = (&outputs[0], &outputs[1]);
                self.add(sample, r, t)
            }
            Some(c) => {
                let values = c.values.get(&sample.index).ok_or_else(|| {
                    Error::Internal(format!(
                        "no float outputs cached for sample {}",
                        sample.index
                    ))
                })?;
                let r: Vec<Floats> = values
                    .iter()
                    .map(|(shape, data)| Floats { shape, data })
                    .collect();
                self.add(sample, &r, &outputs[0])
            }
        }
    }
}

impl Collector<'_> {
    fn add(&mut self, sample: &Sample, r: &[Floats], t: &[Floats]) -> Result<(), Error> {
        for k in 0..self.outputs {
            if r[k].shape != t[k].shape {
                return Err(ModelError::Invalid {
                    path: self.quant_path.to_path_buf(),
                    problems: vec![format!(
                        "output `{}` has shape {:?} where the float model's has {:?}",
                        self.names[k], t[k].shape, r[k].shape
                    )],
                }
                .into());
            }
            self.errors[k].add(r[k].data, t[k].data);
            let width = r[k].shape.last().copied().unwrap_or(0);
            if width < 2 {
                continue;
            }
            let rows = r[k].data.len() / width;
            let labels = match (self.labels, self.labelled_output == Some(k)) {
                (Some(l), true) => {
                    let from = sample.index * rows;
                    let slice = l.values.get(from..from + rows).ok_or_else(|| {
                        CalibError::BadFile {
                            path: l.path.to_path_buf(),
                            reason: format!(
                                "holds {} labels; sample {} needs labels {from}..{} ({rows} row(s) of output `{}` per sample)",
                                l.values.len(),
                                sample.index,
                                from + rows,
                                self.names[k]
                            ),
                        }
                    })?;
                    Some(slice)
                }
                _ => None,
            };
            self.top1[k]
                .get_or_insert_with(Top1::default)
                .add(r[k].data, t[k].data, width, labels);
        }
        if let Some(kept) = &mut self.kept {
            let values = t[..self.outputs]
                .iter()
                .map(|o| (o.shape.to_vec(), o.data.to_vec()))
                .collect();
            kept.push((sample.index, values));
        }
        for (i, l) in self.layers.iter().enumerate() {
            self.layer_acc[i].add(r[l.reference].data, t[l.output].data);
            self.layer_local[i].add(t[l.input].data, t[l.output].data);
        }
        Ok(())
    }
}

/// What to measure besides the outputs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Measure {
    /// The error of every quantized tensor.
    pub per_layer: bool,
    /// Keep the simulated outputs ([`Comparison::saved_outputs`]).
    pub keep_outputs: bool,
    /// The data is a tail of the labelled set: the labels file may hold more labels.
    pub labels_window: bool,
}

/// Refuses a quantized model whose outputs are not the float model's.
pub fn same_outputs(reference: Source, quantized: Source) -> Result<Vec<String>, Error> {
    let outputs = graph_outputs(reference.model);
    let q_outputs = graph_outputs(quantized.model);
    if outputs != q_outputs {
        return Err(UsageError::Invalid(format!(
            "`{}` has outputs {:?} where `{}` has {:?}: not a quantization of that model",
            quantized.path.display(),
            q_outputs,
            reference.path.display(),
            outputs
        ))
        .into());
    }
    Ok(outputs)
}

/// The parts `data` runs in (shapes, control-flow values: `calib::partition`) for both models.
fn parts_of(
    models: &[&ModelProto],
    inputs: &[InputSpec],
    data: &Dataset,
) -> Result<Vec<Part>, Error> {
    let control: BTreeSet<String> = models
        .iter()
        .flat_map(|m| crate::ir::control::control_inputs(m))
        .collect();
    Ok(crate::calib::partition(data.clone(), inputs, &control)?)
}

/// The copy of `model` tract runs on `part` (its control flow specialized).
fn specialized(model: Source, part: &Part, inputs: &[InputSpec]) -> Result<ModelProto, Error> {
    let mut flats = part.specialize(model.model, model.path, inputs)?;
    Ok(flats.remove(0).model)
}

/// Runs `reference` and `quantized` (simulated) on every sample of `data` and compares them.
pub fn compare(
    reference: Source,
    quantized: Source,
    inputs: &[InputSpec],
    data: Dataset,
    opts: &RunOptions,
    labels: Option<Labels>,
    measure: Measure,
) -> Result<Comparison, Error> {
    let outputs = same_outputs(reference, quantized)?;
    simulated(quantized)?;
    let run = Run {
        outputs: &outputs,
        labelled_output: labels.and(first_classifier(reference.model)),
        labels,
        quant_path: quantized.path,
        keep_outputs: measure.keep_outputs,
        labels_window: measure.labels_window,
        cached: None,
    };
    let samples = data.len();
    let mut totals = run.totals();
    for part in parts_of(&[reference.model, quantized.model], inputs, &data)? {
        let ref_flat = specialized(reference, &part, inputs)?;
        let q_flat = specialized(quantized, &part, inputs)?;
        let sim = simulated(Source {
            model: &q_flat,
            path: quantized.path,
        })?;
        let ref_names = crate::ir::Index::new(ref_flat.graph.as_ref().expect("graph")).names();
        let (mut rsel, mut tsel) = (Selection::default(), Selection::default());
        for o in &outputs {
            rsel.add(o);
            tsel.add(o);
        }
        let mut slots = Vec::new();
        let mut sites = Vec::new();
        if measure.per_layer {
            for site in &sim.activations {
                // the float tensor quantized, by its name in the float model (a quantized graph
                // output keeps its name on the dequantized value)
                let Some(name) = [&site.input, &site.output]
                    .into_iter()
                    .find(|n| ref_names.contains(*n))
                else {
                    continue;
                };
                slots.push(LayerSlots {
                    reference: rsel.add(name),
                    input: tsel.add(&site.input),
                    output: tsel.add(&site.output),
                });
                sites.push((name.clone(), site.node.clone()));
            }
        }
        let ref_model = runnable(&ref_flat, &rsel.names)?;
        let sim_model = runnable(&sim.model, &tsel.names)?;
        let r = Runner::compiled(
            &ref_model,
            reference.path,
            Some(&rsel.names),
            inputs,
            &part.shapes,
        )?;
        let t = Runner::compiled(
            &sim_model,
            quantized.path,
            Some(&tsel.names),
            inputs,
            &part.shapes,
        )?;
        let part_data = part.data.clone().expect("parts of data hold data");
        let c = run.go(&[&r, &t], &slots, part_data, opts)?;
        totals.add(c, &sites, &sim);
    }
    run.finish(totals, samples)
}

/// What the parts of one comparison measured, merged: outputs, labels, each quantized tensor
/// (by tensor and node, in order of first appearance), kept outputs.
struct Totals {
    errors: Vec<ErrorStats>,
    top1: Vec<Option<Top1>>,
    layers: Vec<((String, String), ErrorStats, ErrorStats)>,
    kept: Vec<(usize, Vec<Values>)>,
    simulated_activations: usize,
    simulated_constants: usize,
}

impl Totals {
    fn add(
        &mut self,
        c: Collector,
        sites: &[(String, String)],
        sim: &crate::accuracy::simulate::Simulated,
    ) {
        self.kept.extend(c.kept.into_iter().flatten());
        for (a, b) in self.errors.iter_mut().zip(&c.errors) {
            a.merge(b);
        }
        for (a, b) in self.top1.iter_mut().zip(&c.top1) {
            if let Some(b) = b {
                a.get_or_insert_with(Top1::default).merge(b);
            }
        }
        for (i, site) in sites.iter().enumerate() {
            match self.layers.iter_mut().find(|l| l.0 == *site) {
                Some(l) => {
                    l.1.merge(&c.layer_acc[i]);
                    l.2.merge(&c.layer_local[i]);
                }
                None => self.layers.push((
                    site.clone(),
                    c.layer_acc[i].clone(),
                    c.layer_local[i].clone(),
                )),
            }
        }
        self.simulated_activations = self.simulated_activations.max(sim.activations.len());
        self.simulated_constants = self.simulated_constants.max(sim.constants);
    }
}

/// One comparison run: what is measured, and how the parts are merged.
struct Run<'a> {
    outputs: &'a [String],
    labelled_output: Option<usize>,
    labels: Option<Labels<'a>>,
    quant_path: &'a Path,
    keep_outputs: bool,
    labels_window: bool,
    cached: Option<&'a Reference>,
}

impl<'a> Run<'a> {
    fn collector(&self, slots: &'a [LayerSlots]) -> Collector<'a> {
        Collector {
            outputs: self.outputs.len(),
            layers: slots,
            labelled_output: self.labelled_output,
            labels: self.labels,
            errors: vec![ErrorStats::default(); self.outputs.len()],
            top1: vec![None; self.outputs.len()],
            layer_acc: vec![ErrorStats::default(); slots.len()],
            layer_local: vec![ErrorStats::default(); slots.len()],
            names: self.outputs,
            quant_path: self.quant_path,
            kept: self.keep_outputs.then(Vec::new),
            cached: self.cached,
        }
    }

    fn totals(&self) -> Totals {
        Totals {
            errors: vec![ErrorStats::default(); self.outputs.len()],
            top1: vec![None; self.outputs.len()],
            layers: Vec::new(),
            kept: Vec::new(),
            simulated_activations: 0,
            simulated_constants: 0,
        }
    }

    /// Runs the models on one part of the data and merges the threads' collectors.
    fn go(
        &self,
        models: &[&crate::calib::Compiled],
        slots: &'a [LayerSlots],
        data: Dataset,
        opts: &RunOptions,
    ) -> Result<Collector<'a>, Error> {
        let parts = run_models(models, data, opts, || self.collector(slots))?;
        let mut total = self.collector(slots);
        let mut kept = Vec::new();
        for p in parts {
            kept.extend(p.kept.into_iter().flatten());
            for (a, b) in total.errors.iter_mut().zip(&p.errors) {
                a.merge(b);
            }
            for (a, b) in total.top1.iter_mut().zip(&p.top1) {
                if let Some(b) = b {
                    a.get_or_insert_with(Top1::default).merge(b);
                }
            }
            for (a, b) in total.layer_acc.iter_mut().zip(&p.layer_acc) {
                a.merge(b);
            }
            for (a, b) in total.layer_local.iter_mut().zip(&p.layer_local) {
                a.merge(b);
            }
        }
        total.kept = Some(kept);
        Ok(total)
    }

    fn finish(&self, mut total: Totals, samples: usize) -> Result<Comparison, Error> {
        if let Some(l) = self.labels {
            let needed = self
                .labelled_output
                .and_then(|k| total.top1[k].as_ref())
                .map_or(0, |t| t.rows);
            // a held-out tail reads a window of the file
            let expected = if self.labels_window {
                needed as usize <= l.values.len()
            } else {
                needed as usize == l.values.len()
            };
            if !expected {
                return Err(CalibError::BadFile {
                    path: l.path.to_path_buf(),
                    reason: format!(
                        "holds {} labels for {needed} classified row(s) of {samples} sample(s)",
                        l.values.len()
                    ),
                }
                .into());
            }
        }
        let metrics: Vec<OutputMetrics> = self
            .outputs
            .iter()
            .enumerate()
            .map(|(k, name)| OutputMetrics::new(name, &total.errors[k], total.top1[k].as_ref()))
            .collect();
        let top1 = self
            .labelled_output
            .or_else(|| total.top1.iter().position(Option::is_some))
            .and_then(|k| total.top1[k].clone());
        let layers_in_graph_order: Vec<LayerMetrics> = total
            .layers
            .iter()
            .map(|((tensor, node), acc, local)| LayerMetrics {
                tensor: tensor.clone(),
                node: node.clone(),
                sqnr_db: acc.sqnr_db(),
                local_sqnr_db: local.sqnr_db(),
            })
            .collect();
        let mut layers = layers_in_graph_order.clone();
        sort_worst_first(&mut layers);
        total.kept.sort_by_key(|k| k.0);
        let saved_outputs = if self.keep_outputs {
            stack_outputs(
                self.outputs,
                std::mem::take(&mut total.kept),
                self.quant_path,
            )?
        } else {
            Vec::new()
        };
        Ok(Comparison {
            samples,
            outputs: metrics,
            labels: top1.as_ref().and_then(LabelMetrics::new),
            layers,
            simulated_activations: total.simulated_activations,
            simulated_constants: total.simulated_constants,
            layers_in_graph_order,
            top1,
            saved_outputs,
        })
    }
}

/// Stacks per-sample outputs into one array per output (`[samples, ...]`).
fn stack_outputs(
    names: &[String],
    kept: Vec<(usize, Vec<Values>)>,
    path: &Path,
) -> Result<Vec<NamedArray>, Error> {
    let Some(first) = kept.first() else {
        return Ok(vec![]);
    };
    let mut out: Vec<NamedArray> = names
        .iter()
        .zip(&first.1)
        .map(|(n, (shape, _))| {
            let mut s = vec![kept.len()];
            s.extend(shape);
            (n.clone(), s, Vec::new())
        })
        .collect();
    for (_, values) in kept {
        for (o, (shape, data)) in out.iter_mut().zip(values) {
            if shape[..] != o.1[1..] {
                return Err(ModelError::Unsupported {
                    path: path.to_path_buf(),
                    what: format!(
                        "output `{}` whose shape changes between samples (cannot stack it)",
                        o.0
                    ),
                }
                .into());
            }
            o.2.extend(data);
        }
    }
    Ok(out)
}

/// The first graph output whose last dim is not declared 1: the one labels classify.
fn first_classifier(model: &ModelProto) -> Option<usize> {
    use crate::proto::{tensor_shape_proto::dimension::Value as Dim, type_proto};
    let g = model.graph.as_ref()?;
    g.output.iter().position(|o| {
        let Some(type_proto::Value::TensorType(t)) =
            o.r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            return true;
        };
        let last = t.shape.as_ref().and_then(|s| s.dim.last());
        !matches!(last.and_then(|d| d.value.as_ref()), Some(Dim::DimValue(1)))
    })
}

mod gate;
mod reference;

pub use gate::{Gate, gates};
pub use reference::Reference;
