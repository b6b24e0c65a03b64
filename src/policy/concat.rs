//! Concat rules that need ranges or the graph around: the groups OpenVINO computes wrongly in
//! int8, and Concats whose inputs cannot share one scale.

use super::*;

/// Largest ratio between the ranges of the inputs a Concat puts under one scale before it is
/// kept float: past it, one int8 scale rounds the smaller inputs away (box coordinates in
/// 0-320 next to class scores in 0-1 leave the scores 0 or 1.25).
pub const CONCAT_RANGE_RATIO: f32 = 64.0;

impl QuantPlan {
    /// The shared-scale groups holding a Concat output that a Conv reads quantized (OpenVINO
    /// computes those wrongly in int8: `activations.concat_uint8`).
    pub fn concat_conv_groups(&self, model: &ModelProto) -> std::collections::BTreeSet<usize> {
        let graph = crate::ir::graph(model);
        let index = ir::Index::new(graph);
        self.activations
            .iter()
            .filter(|a| {
                index
                    .producer(&a.tensor)
                    .is_some_and(|(p, _)| index.node(p).op_type() == "Concat")
                    && a.consumers
                        .iter()
                        .any(|&(n, _)| index.node(n).op_type() == "Conv")
            })
            .filter_map(|a| a.group)
            .collect()
    }

    /// Keeps float every Concat whose inputs would share one scale (a shared-scale group, or the
    /// quantized output of a node unit) while their ranges (`ranges`: tensor → [lo, hi]) differ
    /// by more than [`CONCAT_RANGE_RATIO`]. Returns a note per Concat kept float.
    pub fn split_disparate_concats(
        &mut self,
        model: &ModelProto,
        ranges: &HashMap<String, (f32, f32)>,
    ) -> Vec<String> {
        let graph = crate::ir::graph(model);
        let mut notes = Vec::new();
        for (id, node) in graph.node.iter().enumerate() {
            if node.op_type() != "Concat" {
                continue;
            }
            let out = node.output.first().map_or("", |s| s.as_str());
            let out_group = self.site(out).map(|s| s.group);
            let inputs: Vec<&ActivationSite> = self
                .activations
                .iter()
                .filter(|a| a.consumers.iter().any(|c| c.0 == id))
                .collect();
            let grouped = inputs.len() > 1
                && inputs[0].group.is_some()
                && inputs.iter().all(|a| a.group == inputs[0].group);
            if out_group.is_none() && !grouped {
                continue;
            }
            let amax: Vec<(String, f32)> = inputs
                .iter()
                .filter_map(|a| {
                    ranges
                        .get(&a.tensor)
                        .map(|r| (a.tensor.clone(), r.0.abs().max(r.1.abs())))
                })
                .filter(|(_, m)| *m > 0.0)
                .collect();
            let (Some(lo), Some(hi)) = (
                amax.iter().min_by(|a, b| a.1.total_cmp(&b.1)),
                amax.iter().max_by(|a, b| a.1.total_cmp(&b.1)),
            ) else {
                continue;
            };
            if hi.1 / lo.1 <= CONCAT_RANGE_RATIO {
                continue;
            }
            let reason = format!(
                "its inputs' ranges differ {:.0}x (`{}` up to {}, `{}` up to {}): one int8 scale would erase the smaller",
                hi.1 / lo.1,
                hi.0,
                hi.1,
                lo.0,
                lo.1
            );
            let groups: Vec<usize> = inputs
                .iter()
                .filter_map(|a| a.group)
                .chain(out_group.flatten())
                .collect();
            self.activations.retain(|a| a.tensor != out);
            for a in &mut self.activations {
                a.consumers.retain(|c| c.0 != id);
                if a.group.is_some_and(|g| groups.contains(&g)) {
                    a.group = None;
                }
            }
            self.activations
                .retain(|a| !a.consumers.is_empty() || a.all_consumers);
            let d = &mut self.nodes[id];
            d.quantized = false;
            d.reason = Some(reason.clone());
            notes.push(format!(
                "`{}` kept float: {reason}",
                ir::node_label(node, id)
            ));
        }
        notes
    }
}
