//! Reading and building `TensorProto` values: the element types we touch, float32 data in either
//! storage field, and the small initializers the rewrite adds (scales, zero-points, int8 weights).

use crate::proto::{TensorProto, tensor_proto::DataType};

/// The ONNX element type name used in messages (`float32`, `int8`, ...).
pub fn elem_type_name(elem_type: i32) -> &'static str {
    match DataType::try_from(elem_type) {
        Ok(DataType::Float) => "float32",
        Ok(DataType::Uint8) => "uint8",
        Ok(DataType::Int8) => "int8",
        Ok(DataType::Uint16) => "uint16",
        Ok(DataType::Int16) => "int16",
        Ok(DataType::Int32) => "int32",
        Ok(DataType::Int64) => "int64",
        Ok(DataType::String) => "string",
        Ok(DataType::Bool) => "bool",
        Ok(DataType::Float16) => "float16",
        Ok(DataType::Double) => "float64",
        Ok(DataType::Uint32) => "uint32",
        Ok(DataType::Uint64) => "uint64",
        Ok(DataType::Bfloat16) => "bfloat16",
        Ok(DataType::Int4) => "int4",
        Ok(DataType::Uint4) => "uint4",
        Ok(DataType::Float8e4m3fn) => "float8e4m3fn",
        Ok(_) => "an exotic type",
        Err(_) => "an unknown type",
    }
}

/// Number of elements a tensor of these dims holds, `None` on a negative dim or overflow.
pub fn element_count(dims: &[i64]) -> Option<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(usize::try_from(d).ok()?))
}

/// The float32 values of a FLOAT tensor, from `raw_data` (little-endian) or `float_data`.
pub fn f32_data(t: &TensorProto) -> Result<Vec<f32>, String> {
    if t.data_type != Some(DataType::Float as i32) {
        return Err(format!("is {}, not float32", elem_type_name(t.data_type())));
    }
    let n = element_count(&t.dims).ok_or("has invalid dims")?;
    let values: Vec<f32> = match &t.raw_data {
        Some(raw) if !raw.is_empty() || t.float_data.is_empty() => raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        _ => t.float_data.clone(),
    };
    of_count(values, n, &t.dims)
}

/// `values` when there are `n` of them (what `dims` need), else an error saying both.
pub fn of_count<T>(values: Vec<T>, n: usize, dims: &[i64]) -> Result<Vec<T>, String> {
    if values.len() != n {
        return Err(format!(
            "holds {} values where its dims {dims:?} need {n}",
            values.len()
        ));
    }
    Ok(values)
}

fn with_raw(name: &str, dims: &[usize], data_type: DataType, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(data_type as i32),
        raw_data: Some(raw.into()),
        ..Default::default()
    }
}

/// A float32 initializer (`dims` empty for a scalar).
pub fn f32_tensor(name: &str, dims: &[usize], values: &[f32]) -> TensorProto {
    let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    with_raw(name, dims, DataType::Float, raw)
}

/// An int8 initializer.
pub fn i8_tensor(name: &str, dims: &[usize], values: &[i8]) -> TensorProto {
    with_raw(
        name,
        dims,
        DataType::Int8,
        values.iter().map(|&v| v as u8).collect(),
    )
}

/// The values of an int8 tensor (raw bytes, or `int32_data`).
pub fn i8_data(t: &TensorProto) -> Result<Vec<i8>, String> {
    if t.data_type != Some(DataType::Int8 as i32) {
        return Err(format!("is {}, not int8", elem_type_name(t.data_type())));
    }
    let n = element_count(&t.dims).ok_or("has invalid dims")?;
    let values: Vec<i8> = match &t.raw_data {
        Some(raw) if !raw.is_empty() || t.int32_data.is_empty() => {
            raw.iter().map(|&b| b as i8).collect()
        }
        _ => t.int32_data.iter().map(|&v| v as i8).collect(),
    };
    of_count(values, n, &t.dims)
}

/// A uint8 initializer.
pub fn u8_tensor(name: &str, dims: &[usize], values: &[u8]) -> TensorProto {
    with_raw(name, dims, DataType::Uint8, values.to_vec())
}

/// An int32 initializer (quantized biases).
pub fn i32_tensor(name: &str, dims: &[usize], values: &[i32]) -> TensorProto {
    let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    with_raw(name, dims, DataType::Int32, raw)
}

/// An int16 initializer.
pub fn i16_tensor(name: &str, dims: &[usize], values: &[i16]) -> TensorProto {
    let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    with_raw(name, dims, DataType::Int16, raw)
}

/// A float8 e4m3fn initializer from its bytes (`params::to_fp8`).
pub fn fp8_tensor(name: &str, dims: &[usize], bytes: &[u8]) -> TensorProto {
    with_raw(name, dims, DataType::Float8e4m3fn, bytes.to_vec())
}

/// An int4 initializer: values in [-8, 7], two per byte, the first in the low nibble (ONNX's
/// packing; an odd count leaves the last high nibble 0).
pub fn i4_tensor(name: &str, dims: &[usize], values: &[i8]) -> TensorProto {
    let raw = values
        .chunks(2)
        .map(|p| (p[0] as u8 & 0x0f) | ((p.get(1).copied().unwrap_or(0) as u8 & 0x0f) << 4))
        .collect();
    with_raw(name, dims, DataType::Int4, raw)
}

/// The values of an int64 tensor (raw or typed storage).
pub fn i64_data(t: &TensorProto) -> Result<Vec<i64>, String> {
    if t.data_type() != DataType::Int64 as i32 {
        return Err(format!("is {}, not int64", elem_type_name(t.data_type())));
    }
    match &t.raw_data {
        Some(r) if !r.is_empty() => {
            if r.len() % 8 != 0 {
                return Err(format!("holds {} bytes, not whole int64 values", r.len()));
            }
            Ok(r.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect())
        }
        _ => Ok(t.int64_data.clone()),
    }
}

/// A uint4 initializer: values in [0, 15], packed as [`i4_tensor`] packs.
pub fn u4_tensor(name: &str, dims: &[usize], values: &[i8]) -> TensorProto {
    let mut t = i4_tensor(name, dims, values);
    t.data_type = Some(DataType::Uint4 as i32);
    t
}

/// An int64 initializer (used for axes moved from attributes to inputs).
pub fn i64_tensor(name: &str, dims: &[usize], values: &[i64]) -> TensorProto {
    let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    with_raw(name, dims, DataType::Int64, raw)
}

/// Whether the tensor's values are in an external file (not read yet).
pub fn is_external(t: &TensorProto) -> bool {
    t.data_location == Some(crate::proto::tensor_proto::DataLocation::External as i32)
}

/// Size in bytes of the tensor's payload as stored (raw or typed fields).
pub fn payload_len(t: &TensorProto) -> usize {
    t.raw_data.as_ref().map_or(0, |r| r.len())
        + 4 * (t.float_data.len() + t.int32_data.len())
        + 8 * (t.int64_data.len() + t.double_data.len() + t.uint64_data.len())
        + t.string_data.iter().map(|s| s.len()).sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_data_reads_both_storages() {
        let raw = f32_tensor("w", &[2], &[1.5, -2.0]);
        assert_eq!(f32_data(&raw).unwrap(), vec![1.5, -2.0]);
        let typed = TensorProto {
            dims: vec![2],
            data_type: Some(DataType::Float as i32),
            float_data: vec![3.0, 4.0],
            ..Default::default()
        };
        assert_eq!(f32_data(&typed).unwrap(), vec![3.0, 4.0]);
    }

    #[test]
    fn f32_data_rejects_wrong_count_and_type() {
        let mut t = f32_tensor("w", &[3], &[1.0, 2.0]);
        assert!(f32_data(&t).unwrap_err().contains("need 3"));
        t.data_type = Some(DataType::Float16 as i32);
        assert!(f32_data(&t).unwrap_err().contains("float16"));
    }

    #[test]
    fn element_count_guards_overflow() {
        assert_eq!(element_count(&[2, 3]), Some(6));
        assert_eq!(element_count(&[]), Some(1));
        assert_eq!(element_count(&[-1, 3]), None);
        assert_eq!(element_count(&[i64::MAX, 4]), None);
    }
}
