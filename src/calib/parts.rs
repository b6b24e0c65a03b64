//! Calibration samples in parts tract runs as one model each: samples whose inputs have the
//! same shapes, and the same values for the inputs control flow reads by value (an `If` on a
//! sample-rate input). Each part has its own copy of the model, its control flow specialized
//! for it (`ir::control::specialize`), compiled once. Statistics of all parts merge exactly, so
//! parts change no result of a model that needs none: such a model is one part, as before.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use super::array::InputSpec;
use super::array::{Array, shape_str};
use super::runner::evaluate_once;
use super::source::Dataset;
use crate::error::CalibError;
use crate::ir::control::{self, Flat};
use crate::proto::ModelProto;

/// Control inputs with more elements than this are never read ahead: a condition reading one
/// by value stays unspecialized.
pub const MAX_CONTROL_ELEMENTS: usize = 64;

/// Samples of one shape split by control values into at most this many parts; with more
/// distinct values, the conditions reading them stay unspecialized.
pub const MAX_VALUE_PARTS: usize = 8;

/// Samples with one shape per input and one value per control input.
#[derive(Clone, Debug)]
pub struct Part {
    /// `None`: no data (planning without calibration, weight-only): the declared shapes.
    pub data: Option<Dataset>,
    pub shapes: Vec<Option<Vec<usize>>>,
    /// The control inputs the part's samples agree on, with that value.
    pub fixed: BTreeMap<String, Array>,
}

impl Part {
    /// The part of a model planned without data: its declared shapes.
    pub fn declared(inputs: &[InputSpec]) -> Part {
        Part {
            data: None,
            shapes: inputs
                .iter()
                .map(|i| i.dims.iter().copied().collect::<Option<Vec<usize>>>())
                .collect(),
            fixed: BTreeMap::new(),
        }
    }

    /// A label for messages: the shapes and control values, e.g. `x [1,16000], sr = 16000`.
    pub fn label(&self, inputs: &[InputSpec]) -> String {
        let mut parts: Vec<String> = inputs
            .iter()
            .zip(&self.shapes)
            .filter_map(|(i, s)| {
                let s = s.as_ref()?;
                let dims: Vec<String> = s.iter().map(|d| d.to_string()).collect();
                Some(format!("`{}` {}", i.name, shape_str(&dims)))
            })
            .collect();
        for (name, a) in &self.fixed {
            parts.push(format!("`{name}` = {}", a.describe_values()));
        }
        parts.join(", ")
    }

    /// The inputs of one sample by name, to compute conditions with: the first sample's, or
    /// zeros of the declared shape without data (only shapes matter to a condition that reads
    /// no fixed input by value).
    fn feed(&self, inputs: &[InputSpec]) -> Result<HashMap<String, Array>, CalibError> {
        let mut feed = HashMap::new();
        match &self.data {
            Some(d) => {
                if let Some(first) = d.clone().samples().next() {
                    for (spec, a) in inputs.iter().zip(first?.arrays) {
                        feed.insert(spec.name.clone(), a);
                    }
                }
            }
            None => {
                for (spec, shape) in inputs.iter().zip(&self.shapes) {
                    if let Some(shape) = shape {
                        let n: usize = shape.iter().product();
                        let a = Array {
                            elem: spec.elem,
                            shape: shape.clone(),
                            data: vec![0; n * spec.elem.size()],
                        };
                        feed.insert(spec.name.clone(), a);
                    }
                }
            }
        }
        Ok(feed)
    }

    /// The copy of `model` tract runs on this part: control flow specialized where its
    /// conditions are known here.
    ///
    /// Without data, a condition that cannot be computed forks the copy (one per branch): those
    /// copies are for typing and planning, never run.
    pub fn specialize(
        &self,
        model: &ModelProto,
        path: &Path,
        inputs: &[InputSpec],
    ) -> Result<Vec<Flat>, CalibError> {
        if !control::has_subgraphs(model) {
            return Ok(vec![Flat {
                model: model.clone(),
                instances: BTreeMap::new(),
                kept: Vec::new(),
            }]);
        }
        let feed = self.feed(inputs)?;
        let fixed: BTreeSet<String> = self.fixed.keys().cloned().collect();
        let mut eval = |m: &ModelProto, needs: &[String]| evaluate_once(m, path, &feed, needs);
        Ok(control::specialize(
            model,
            &fixed,
            &mut eval,
            self.data.is_none(),
        ))
    }
}

/// Splits `data` into parts: by input shapes, then by the values of the small inputs among
/// `control` (read ahead, one input at a time).
pub fn partition(
    data: Dataset,
    inputs: &[InputSpec],
    control: &BTreeSet<String>,
) -> Result<Vec<Part>, CalibError> {
    let mut parts = Vec::new();
    for (shape, set) in data.by_shape() {
        let shapes: Vec<Option<Vec<usize>>> = shape.iter().cloned().map(Some).collect();
        let which: Vec<usize> = inputs
            .iter()
            .enumerate()
            .filter(|(i, s)| {
                control.contains(&s.name)
                    && shape
                        .get(*i)
                        .is_some_and(|d| d.iter().product::<usize>() <= MAX_CONTROL_ELEMENTS)
            })
            .map(|(i, _)| i)
            .collect();
        if which.is_empty() {
            parts.push(Part {
                data: Some(set),
                shapes,
                fixed: BTreeMap::new(),
            });
            continue;
        }
        // samples by the bytes of their control inputs, in order of first sample
        let mut groups: Vec<(Vec<Array>, Vec<usize>)> = Vec::new();
        for sample in set.only_inputs(&which).samples() {
            let sample = sample?;
            match groups.iter_mut().find(|(v, _)| *v == sample.arrays) {
                Some((_, idx)) => idx.push(sample.index),
                None => groups.push((sample.arrays, vec![sample.index])),
            }
        }
        if groups.len() > MAX_VALUE_PARTS {
            parts.push(Part {
                data: Some(set),
                shapes,
                fixed: BTreeMap::new(),
            });
            continue;
        }
        for (values, idx) in groups {
            let fixed = which
                .iter()
                .zip(values)
                .map(|(&i, a)| (inputs[i].name.clone(), a))
                .collect();
            parts.push(Part {
                data: Some(if parts_needed(&idx, &set) {
                    set.select(idx)
                } else {
                    set.clone()
                }),
                shapes: shapes.clone(),
                fixed,
            });
        }
    }
    Ok(parts)
}

/// Whether `idx` is a proper subset of the samples of `set` (else `set` itself serves).
fn parts_needed(idx: &[usize], set: &Dataset) -> bool {
    idx.len() != set.len()
}
