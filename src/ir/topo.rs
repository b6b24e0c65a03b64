//! Stable topological sort: among the nodes whose inputs are ready, the one with the smallest
//! key goes first, so an already-sorted graph keeps its order and new nodes land where their
//! placement key puts them.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::proto::NodeProto;

/// Sorts `nodes` (each with an ordering key) so that every node comes after the producers of
/// its inputs and of the outer tensors its subgraphs read. Returns the sorted nodes and, for
/// each, its position in the input. Fails on a cycle, naming its nodes.
pub fn topo_sort<K: Ord + Copy>(
    nodes: Vec<(K, NodeProto)>,
) -> Result<(Vec<NodeProto>, Vec<usize>), String> {
    let producer: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .flat_map(|(i, (_, n))| {
            n.output
                .iter()
                .filter(|o| !o.is_empty())
                .map(move |o| (o.as_str(), i))
        })
        .collect();
    let mut waiting = vec![0usize; nodes.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, (_, n)) in nodes.iter().enumerate() {
        let mut deps: Vec<usize> = n
            .input
            .iter()
            .map(String::as_str)
            .chain(super::captures(n).iter().map(String::as_str))
            .filter_map(|t| producer.get(t).copied())
            .filter(|&p| p != i)
            .collect();
        deps.sort_unstable();
        deps.dedup();
        waiting[i] = deps.len();
        for p in deps {
            dependents[p].push(i);
        }
    }
    let mut ready: BinaryHeap<Reverse<(K, usize)>> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| waiting[*i] == 0)
        .map(|(i, (k, _))| Reverse((*k, i)))
        .collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(Reverse((_, i))) = ready.pop() {
        order.push(i);
        for &d in &dependents[i] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.push(Reverse((nodes[d].0, d)));
            }
        }
    }
    if order.len() != nodes.len() {
        let stuck: Vec<String> = (0..nodes.len())
            .filter(|i| waiting[*i] > 0)
            .map(|i| super::node_label(&nodes[i].1, i))
            .collect();
        return Err(format!(
            "the graph has a cycle through {}",
            stuck.join(", ")
        ));
    }
    let mut slots: Vec<Option<NodeProto>> = nodes.into_iter().map(|(_, n)| Some(n)).collect();
    let sorted = order
        .iter()
        .map(|&i| slots[i].take().expect("each index once"))
        .collect();
    Ok((sorted, order))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            name: Some(name.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn names(nodes: &[NodeProto]) -> Vec<&str> {
        nodes.iter().map(|n| n.name()).collect()
    }

    #[test]
    fn sorted_graph_keeps_its_order() {
        let g = vec![
            (0, node("a", &["x"], &["a"])),
            (1, node("b", &["a"], &["b"])),
            (2, node("c", &["x"], &["c"])),
        ];
        assert_eq!(names(&topo_sort(g).unwrap().0), ["a", "b", "c"]);
    }

    #[test]
    fn producers_move_before_consumers_and_keys_break_ties() {
        let g = vec![
            (5, node("late", &["q"], &["y"])),
            (9, node("other", &["x"], &["z"])),
            (7, node("q", &["x"], &["q"])),
        ];
        assert_eq!(names(&topo_sort(g).unwrap().0), ["q", "late", "other"]);
    }

    #[test]
    fn cycles_are_reported_by_node() {
        let g = vec![
            (0, node("a", &["b"], &["a"])),
            (1, node("b", &["a"], &["b"])),
        ];
        let err = topo_sort(g).unwrap_err();
        assert!(
            err.contains("cycle") && err.contains('a') && err.contains('b'),
            "{err}"
        );
    }
}
