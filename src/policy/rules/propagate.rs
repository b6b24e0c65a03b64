//! Quantization carried across Concat, pooling and shape ops, and fixed output ranges.

use super::*;

impl Builder<'_> {
    /// Propagates quantization across Concat, pooling and shape ops until nothing changes.
    pub(in crate::policy) fn propagate(&mut self) {
        let p = self.config.placement.clone();
        let mut i = 0;
        while i < self.sites.len() {
            let tensor = self.sites[i].tensor.clone();
            i += 1;
            let Some((pid, _)) = self.index.producer(&tensor) else {
                continue;
            };
            let producer = self.index.node(pid);
            let op = producer.op_type();
            if !ir::is_default_domain(producer.domain())
                || Self::has(&p.float_ops, op)
                || self.kept_float_by_overrides(pid)
            {
                continue;
            }
            let (share, slots): (bool, Vec<usize>) = if op == "Concat" && p.concat_shared_scale {
                (true, (0..producer.input.len()).collect())
            } else if Self::has(&p.shape_ops, op) {
                (true, vec![0])
            } else if p.pooling_with_neighbours && Self::has(&p.pooling_ops, op) {
                (false, vec![0])
            } else {
                continue;
            };
            let mut inputs = Vec::new();
            for slot in slots {
                match self.classify(producer, slot, |_| None) {
                    Ok(Input::Activation(x)) => inputs.push((x, slot)),
                    _ => {
                        inputs.clear();
                        break;
                    }
                }
            }
            if inputs.is_empty() {
                continue;
            }
            let me = self.site_of[&tensor];
            for (x, slot) in inputs {
                self.use_activation(&x, pid, slot);
                if share {
                    let other = self.site_of[&x];
                    self.union(me, other);
                }
            }
            if !self.decisions[pid].quantized {
                let remark = if share {
                    "int8 between quantized neighbours, one shared scale"
                } else {
                    "int8 between quantized neighbours"
                };
                self.quantized(pid, Some(remark.into()));
            }
        }
    }

    /// Whether an override (`skip: true`, or what calibration showed when no override decides)
    /// keeps node `id` float: propagation must not quantize it across.
    fn kept_float_by_overrides(&self, id: NodeId) -> bool {
        match self.overrides.node_skip(self.graph, id) {
            Some((_, skip)) => skip,
            None => {
                let label = ir::node_label(&self.graph.node[id], id);
                self.overrides.automatic.contains_key(&label)
            }
        }
    }

    /// Gives tensors produced by ops with a fixed output range (Softmax) that range.
    pub(in crate::policy) fn fix_ranges(&mut self) {
        for site in &mut self.sites {
            if let Some((pid, _)) = self.index.producer(&site.tensor)
                && let Some(r) = self
                    .config
                    .placement
                    .fixed_ranges
                    .get(self.index.node(pid).op_type())
            {
                site.fixed_range = Some(*r);
            }
        }
    }
}
