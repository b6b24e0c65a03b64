//! Constants that are not initializers: the output of a `Constant` node, possibly passed through
//! `Identity`, `Transpose` or `Cast` (exporters write weights this way). Evaluated here so that
//! such weights quantize like initializers.

use super::{Index, NodeId, attr};
use crate::proto::{
    NodeProto, TensorProto, attribute_proto::AttributeType, tensor_proto::DataType,
};

/// A float constant's dims and values.
#[derive(Clone, Debug, PartialEq)]
pub struct Constant {
    pub dims: Vec<usize>,
    pub data: Vec<f32>,
}

/// Float values of a tensor of float32, float16 or float64.
pub fn float_values(t: &TensorProto) -> Option<Vec<f32>> {
    matches!(
        DataType::try_from(t.data_type()).ok()?,
        DataType::Float | DataType::Float16 | DataType::Double
    )
    .then_some(())?;
    crate::onnx::tensor::floats(t).ok()
}

fn from_tensor(t: &TensorProto) -> Option<Constant> {
    let dims = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<Vec<_>>>()?;
    Some(Constant {
        dims,
        data: float_values(t)?,
    })
}

fn constant_node(node: &NodeProto) -> Option<Constant> {
    let a = attr(node, "value")?;
    (a.r#type() == AttributeType::Tensor).then_some(())?;
    from_tensor(a.t.as_ref()?)
}

fn transpose(c: &Constant, perm: &[usize]) -> Option<Constant> {
    let rank = c.dims.len();
    if perm.len() != rank || (0..rank).any(|i| !perm.contains(&i)) {
        return None;
    }
    let dims: Vec<usize> = perm.iter().map(|&p| c.dims[p]).collect();
    let strides: Vec<usize> = (0..rank)
        .map(|i| c.dims[i + 1..].iter().product())
        .collect();
    let mut data = Vec::with_capacity(c.data.len());
    let mut idx = vec![0usize; rank];
    for _ in 0..c.data.len() {
        data.push(
            c.data[idx
                .iter()
                .zip(perm)
                .map(|(&i, &p)| i * strides[p])
                .sum::<usize>()],
        );
        for d in (0..rank).rev() {
            idx[d] += 1;
            if idx[d] < dims[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Some(Constant { dims, data })
}

/// The value of `tensor` when it is a float constant produced by nodes (not an initializer),
/// and the nodes of that chain (producer last).
pub fn evaluate(index: &Index, tensor: &str) -> Option<(Constant, Vec<NodeId>)> {
    let (id, _) = index.producer(tensor)?;
    let node = index.node(id);
    if !super::is_default_domain(node.domain()) || index.is_graph_output(tensor) {
        return None;
    }
    let input = || -> Option<(Constant, Vec<NodeId>)> {
        let name = node.input.first()?;
        match index.initializer(name) {
            Some(t) if !index.is_graph_input(name) => Some((from_tensor(t)?, vec![])),
            Some(_) => None,
            None => evaluate(index, name),
        }
    };
    let (value, mut chain) = match node.op_type() {
        "Constant" => (constant_node(node)?, vec![]),
        "Identity" => input()?,
        "Cast" if super::attr_int(node, "to") == Some(DataType::Float as i64) => input()?,
        "Transpose" => {
            let (c, chain) = input()?;
            let perm: Vec<usize> = match attr(node, "perm") {
                Some(a) => a
                    .ints
                    .iter()
                    .map(|&p| usize::try_from(p).ok())
                    .collect::<Option<_>>()?,
                None => (0..c.dims.len()).rev().collect(),
            };
            (transpose(&c, &perm)?, chain)
        }
        _ => return None,
    };
    chain.push(id);
    Some((value, chain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposes_like_numpy() {
        // [[1, 2, 3], [4, 5, 6]] transposed
        let c = Constant {
            dims: vec![2, 3],
            data: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        };
        let t = transpose(&c, &[1, 0]).unwrap();
        assert_eq!(t.dims, vec![3, 2]);
        assert_eq!(t.data, vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        // [2, 1, 3] with perm [2, 0, 1]
        let c = Constant {
            dims: vec![2, 1, 3],
            data: vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
        };
        let t = transpose(&c, &[2, 0, 1]).unwrap();
        assert_eq!(t.dims, vec![3, 2, 1]);
        assert_eq!(t.data, vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        assert!(transpose(&c, &[0, 0, 1]).is_none());
    }
}
