//! The float model as tract runs it over calibration data: one copy per part of the data (input
//! shapes, values of the inputs control flow reads), its control flow specialized for that
//! part, BatchNormalization folded, typed and compiled once and kept for every later run.
//!
//! Tensors are named here as the written model names them: a main-graph tensor by its name, a
//! tensor of a subgraph by its scope and name ([`Scoped`]); each part's copy maps them to its
//! own tensors (an unrolled loop body has one per iteration), and their statistics merge.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::calib::{
    Array, Dataset, Extra, InputSpec, Observe, Part, RunOptions, Runner, TensorInfo,
};
use crate::error::{CalibError, Error};
use crate::ir::control::{self, Flat, Step};
use crate::proto::ModelProto;
use crate::stats::{StatsTable, TensorStats};

/// A tensor of the written model: in the main graph (`scope` empty) or in a subgraph.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scoped {
    pub scope: Vec<Step>,
    pub name: String,
}

impl Scoped {
    pub fn main(name: &str) -> Scoped {
        Scoped {
            scope: Vec::new(),
            name: name.to_string(),
        }
    }

    /// The name statistics are kept under: the tensor's own name in the main graph,
    /// `<scope>::<name>` in a subgraph (`If_25/then_branch::conv_out`).
    pub fn key(&self, model: &ModelProto) -> String {
        if self.scope.is_empty() {
            self.name.clone()
        } else {
            format!("{}::{}", control::label(model, &self.scope), self.name)
        }
    }
}

/// One part's copy of the model.
pub(crate) struct Leg {
    pub flat: Flat,
    pub runner: Runner,
    pub types: HashMap<String, TensorInfo>,
    /// Set when tract had to ignore the file's value_info.
    pub note: Option<String>,
}

impl Leg {
    /// The copy's tensors standing for `t` (none when its subgraph is not in this copy).
    pub fn tensors(&self, t: &Scoped) -> Vec<String> {
        let names = if t.scope.is_empty() {
            vec![t.name.clone()]
        } else {
            self.flat.flat_names(&t.scope, &t.name)
        };
        names
            .into_iter()
            .filter(|n| self.types.contains_key(n))
            .collect()
    }
}

type Key = (Vec<Option<Vec<usize>>>, BTreeMap<String, Array>);

/// The copies made for one part.
type Legs = Arc<Vec<Arc<Leg>>>;

/// The model and the copies made so far.
pub(crate) struct Engine {
    model: ModelProto,
    path: PathBuf,
    inputs: Vec<InputSpec>,
    /// Inputs some condition or trip count reads by value.
    control: BTreeSet<String>,
    legs: Mutex<Vec<(Key, Legs)>>,
}

impl Engine {
    pub fn new(model: &ModelProto, path: &Path, inputs: &[InputSpec]) -> Engine {
        Engine {
            control: control::control_inputs(model),
            model: model.clone(),
            path: path.to_path_buf(),
            inputs: inputs.to_vec(),
            legs: Mutex::new(Vec::new()),
        }
    }

    /// The parts of `data`, or the one part of the declared shapes without data.
    pub fn parts(&self, data: Option<&Dataset>) -> Result<Vec<Part>, Error> {
        Ok(match data {
            Some(d) => crate::calib::partition(d.clone(), &self.inputs, &self.control)?,
            None => vec![Part::declared(&self.inputs)],
        })
    }

    /// The copies of the model for `part`: one, or without data one per branch choice.
    pub fn legs(&self, part: &Part) -> Result<Legs, Error> {
        let key: Key = (part.shapes.clone(), part.fixed.clone());
        let mut legs = self.legs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, l)) = legs.iter().find(|(k, _)| *k == key) {
            return Ok(l.clone());
        }
        let flats = part.specialize(&self.model, &self.path, &self.inputs)?;
        let forks = flats.len() > 1;
        let mut made = Vec::new();
        let mut first_err = None;
        for flat in flats {
            let (folded, _) = crate::rewrite::fold_batchnorm(&flat.model)?;
            match super::typed_runner(&folded, &self.path, &self.inputs, &part.shapes) {
                Ok(typed) => made.push(Arc::new(Leg {
                    flat,
                    runner: typed.runner,
                    types: typed.types,
                    note: typed.note,
                })),
                // without data every branch choice is tried; one tract cannot type is one
                // the data could not take either
                Err(e) if forks => {
                    first_err.get_or_insert(e);
                }
                Err(e) => return Err(with_kept(e, &self.model, &flat)),
            }
        }
        if made.is_empty()
            && let Some(e) = first_err
        {
            return Err(e);
        }
        let made = Arc::new(made);
        legs.push((key, made.clone()));
        Ok(made)
    }

    /// Every copy for `data` (or for the declared shapes), with its part.
    pub fn all_legs(&self, data: Option<&Dataset>) -> Result<Vec<(Part, Arc<Leg>)>, Error> {
        let mut out = Vec::new();
        for part in self.parts(data)? {
            for leg in self.legs(&part)?.iter() {
                out.push((part.clone(), leg.clone()));
            }
        }
        Ok(out)
    }

    /// Statistics of `wanted` over `data`, by [`Scoped::key`]: merged over the parts and over
    /// the instances of each subgraph tensor. A subgraph tensor no part reaches has none; a
    /// main-graph tensor without statistics is an error.
    /// `extra` (main-graph tensors) rides along every part's run.
    pub fn calibrate(
        &self,
        wanted: &[Scoped],
        channels: &BTreeSet<Scoped>,
        data: Dataset,
        opts: &RunOptions,
        observe: Observe,
        extra: Option<&dyn Extra>,
    ) -> Result<StatsTable, Error> {
        let samples = data.len();
        let mut merged: BTreeMap<String, TensorStats> = BTreeMap::new();
        for part in self.parts(Some(&data))? {
            let legs = self.legs(&part)?;
            let leg = &legs[0];
            let mut flat: Vec<String> = Vec::new();
            let mut flat_channels = BTreeSet::new();
            let mut of: Vec<(String, Vec<String>)> = Vec::new();
            for t in wanted {
                let names = leg.tensors(t);
                for n in &names {
                    if !flat.contains(n) {
                        flat.push(n.clone());
                    }
                    if channels.contains(t) {
                        flat_channels.insert(n.clone());
                    }
                }
                of.push((t.key(&self.model), names));
            }
            if flat.is_empty() && extra.is_none() {
                continue;
            }
            let part_data = part.data.clone().expect("parts of data hold data");
            let table = leg.runner.calibrate(
                &flat,
                &flat_channels,
                &self.inputs,
                &part.shapes,
                part_data,
                opts,
                observe,
                extra,
            )?;
            for (key, names) in of {
                for n in names {
                    let s = &table.tensors[&n];
                    match merged.get_mut(&key) {
                        Some(m) => m.merge(s).map_err(Error::Internal)?,
                        None => {
                            merged.insert(key.clone(), s.clone());
                        }
                    }
                }
            }
        }
        let unobserved: Vec<String> = wanted
            .iter()
            .filter(|t| t.scope.is_empty() && !merged.contains_key(&t.name))
            .map(|t| format!("`{}`", t.name))
            .collect();
        CalibError::unless_all_observed(unobserved)?;
        Ok(StatsTable {
            samples,
            tensors: merged,
            ..Default::default()
        })
    }

    /// Runs the model as it is over `data`; the number of samples run.
    pub fn infer(&self, data: Dataset, opts: &RunOptions) -> Result<usize, Error> {
        let mut n = 0;
        for part in self.parts(Some(&data))? {
            let legs = self.legs(&part)?;
            let part_data = part.data.clone().expect("parts of data hold data");
            n += legs[0]
                .runner
                .infer(&self.inputs, &part.shapes, part_data, opts)?;
        }
        Ok(n)
    }
}

/// A typing failure, with the control flow the copy left in place and why: what tract then
/// had to type whole.
fn with_kept(e: Error, model: &ModelProto, flat: &Flat) -> Error {
    if flat.kept.is_empty() {
        return e;
    }
    let kept: Vec<String> = flat
        .kept
        .iter()
        .take(4)
        .map(|k| {
            let at = control::label(model, &control::scope_of(&k.instance));
            let at = if at.is_empty() {
                String::new()
            } else {
                format!(" in `{at}`")
            };
            format!("`{}` ({}){at}: {}", k.node, k.op, k.reason)
        })
        .collect();
    match e {
        Error::Model(crate::error::ModelError::Untyped(mut u)) => {
            u.message = format!(
                "{}; control flow tract had to type whole: {}",
                u.message,
                kept.join("; ")
            );
            Error::Model(crate::error::ModelError::Untyped(u))
        }
        other => other,
    }
}

/// Types of the written model's tensors: the main graph's by name, each subgraph's by scope.
#[derive(Clone, Debug, Default)]
pub struct Types {
    pub main: HashMap<String, TensorInfo>,
    pub scopes: BTreeMap<Vec<Step>, HashMap<String, TensorInfo>>,
}

impl Types {
    /// The types every copy found, merged (a dim that differs between copies is unknown).
    pub(crate) fn of(legs: &[(Part, Arc<Leg>)]) -> Types {
        let mut t = Types::default();
        for (_, leg) in legs {
            for (name, info) in &leg.types {
                merge_info(&mut t.main, name, info);
            }
            for (inst, map) in &leg.flat.instances {
                let scope = control::scope_of(inst);
                let entry = t.scopes.entry(scope).or_default();
                for (local, flat) in map {
                    if let Some(info) = leg.types.get(flat) {
                        merge_info(entry, local, info);
                    }
                }
            }
        }
        t
    }

    /// The type of `name` as the subgraph `scope` sees it: its own, or an enclosing graph's.
    pub fn get(&self, scope: &[Step], name: &str) -> Option<&TensorInfo> {
        for k in (1..=scope.len()).rev() {
            if let Some(i) = self.scopes.get(&scope[..k]).and_then(|m| m.get(name)) {
                return Some(i);
            }
        }
        self.main.get(name)
    }
}

fn merge_info(into: &mut HashMap<String, TensorInfo>, name: &str, info: &TensorInfo) {
    match into.get_mut(name) {
        None => {
            into.insert(name.to_string(), info.clone());
        }
        Some(have) => {
            if have.elem != info.elem {
                have.elem = None;
            }
            if have.shape.len() != info.shape.len() {
                have.shape.iter_mut().for_each(|d| *d = None);
            } else {
                for (a, b) in have.shape.iter_mut().zip(&info.shape) {
                    if a != b {
                        *a = None;
                    }
                }
            }
        }
    }
}
