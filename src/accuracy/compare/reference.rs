//! The float outputs of held-out samples, computed once, to score many versions of a model.

use super::*;

/// The float model's outputs on a data set, computed once to score many quantized versions.
pub struct Reference {
    pub(super) outputs: Vec<String>,
    pub(super) labelled_output: Option<usize>,
    pub(super) values: HashMap<usize, Vec<Values>>,
    pub(super) data: Dataset,
}

impl Reference {
    /// Runs `model` over `data` and keeps its outputs.
    pub fn new(
        model: Source,
        inputs: &[InputSpec],
        data: Dataset,
        opts: &RunOptions,
    ) -> Result<Reference, Error> {
        struct Keep(Vec<(usize, Vec<Values>)>);
        impl Collect for Keep {
            fn collect(&mut self, sample: &Sample, outputs: &[Vec<Floats>]) -> Result<(), Error> {
                let v = outputs[0]
                    .iter()
                    .map(|o| (o.shape.to_vec(), o.data.to_vec()))
                    .collect();
                self.0.push((sample.index, v));
                Ok(())
            }
        }
        let outputs = graph_outputs(model.model);
        let mut values = HashMap::new();
        for part in parts_of(&[model.model], inputs, &data)? {
            let flat = specialized(model, &part, inputs)?;
            let m = runnable(&flat, &outputs)?;
            let r = Runner::compiled(&m, model.path, Some(&outputs), inputs, &part.shapes)?;
            let part_data = part.data.clone().expect("parts of data hold data");
            let kept = run_models(&[&r], part_data, opts, || Keep(Vec::new()))?;
            values.extend(kept.into_iter().flat_map(|k| k.0));
        }
        Ok(Reference {
            labelled_output: first_classifier(model.model),
            outputs,
            values,
            data,
        })
    }

    pub fn samples(&self) -> usize {
        self.data.len()
    }

    /// Compares `quantized` (simulated) with the kept outputs: outputs only.
    pub fn compare(
        &self,
        quantized: Source,
        inputs: &[InputSpec],
        opts: &RunOptions,
        labels: Option<Labels>,
    ) -> Result<Comparison, Error> {
        simulated(quantized)?;
        let q_outputs = graph_outputs(quantized.model);
        if q_outputs != self.outputs {
            return Err(Error::Internal(format!(
                "quantized outputs {q_outputs:?} differ from {:?}",
                self.outputs
            )));
        }
        let run = Run {
            outputs: &self.outputs,
            labelled_output: labels.and(self.labelled_output),
            labels,
            quant_path: quantized.path,
            keep_outputs: false,
            labels_window: true,
            cached: Some(self),
        };
        let mut totals = run.totals();
        for part in parts_of(&[quantized.model], inputs, &self.data)? {
            let q_flat = specialized(quantized, &part, inputs)?;
            let sim = simulated(Source {
                model: &q_flat,
                path: quantized.path,
            })?;
            let m = runnable(&sim.model, &self.outputs)?;
            let t = Runner::compiled(
                &m,
                quantized.path,
                Some(&self.outputs),
                inputs,
                &part.shapes,
            )?;
            let part_data = part.data.clone().expect("parts of data hold data");
            let c = run.go(&[&t], &[], part_data, opts)?;
            totals.add(c, &[], &sim);
        }
        run.finish(totals, self.samples())
    }
}
