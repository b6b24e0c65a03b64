//! Reading and building `TensorProto` values. [`le_bytes`] is the one decoder of a tensor's
//! storage (`raw_data`, or the typed field its element type uses); every reader of values
//! ([`ints`], [`floats`], [`f32_data`], ...) is built on it. Also: the integer range of each
//! quantized type ([`int_range`]) and the small initializers the rewrite adds (scales,
//! zero-points, int8 weights).

use std::borrow::Cow;

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

/// Bits one element takes in `raw_data`: 4 for the types packed two per byte (int4, uint4,
/// float4), `None` for types without a fixed-size encoding (string, complex, undefined).
pub fn elem_bits(data_type: i32) -> Option<usize> {
    use DataType::*;
    Some(match DataType::try_from(data_type).ok()? {
        Int4 | Uint4 | Float4e2m1 => 4,
        Int8 | Uint8 | Bool | Float8e4m3fn | Float8e4m3fnuz | Float8e5m2 | Float8e5m2fnuz
        | Float8e8m0 => 8,
        Int16 | Uint16 | Float16 | Bfloat16 => 16,
        Float | Int32 | Uint32 => 32,
        Double | Int64 | Uint64 => 64,
        _ => return None,
    })
}

/// The inclusive range of an integer element type (int4 to uint64), `None` for any other
/// type: the one table of integer ranges.
pub fn int_range(data_type: i32) -> Option<(i128, i128)> {
    Some(match DataType::try_from(data_type).ok()? {
        DataType::Int4 => (-8, 7),
        DataType::Uint4 => (0, 15),
        DataType::Int8 => (i8::MIN.into(), i8::MAX.into()),
        DataType::Uint8 => (0, u8::MAX.into()),
        DataType::Int16 => (i16::MIN.into(), i16::MAX.into()),
        DataType::Uint16 => (0, u16::MAX.into()),
        DataType::Int32 => (i32::MIN.into(), i32::MAX.into()),
        DataType::Uint32 => (0, u32::MAX.into()),
        DataType::Int64 => (i64::MIN.into(), i64::MAX.into()),
        DataType::Uint64 => (0, u64::MAX.into()),
        _ => return None,
    })
}

/// The tensor's elements as `raw_data` lays them out (little-endian, 4-bit types two per byte,
/// the first in the low nibble), from `raw_data` or, when that is empty and the typed field is
/// not, from the typed field the element type uses (`int32_data` for every type of 32 bits or
/// fewer, float16 and float8 as their bits and 4-bit types as packed bytes; `uint64_data` for
/// uint32/uint64). The byte count must be what the dims need.
pub fn le_bytes(t: &TensorProto) -> Result<Cow<'_, [u8]>, String> {
    let bits = elem_bits(t.data_type()).ok_or_else(|| {
        format!(
            "is {}, which has no fixed-size values",
            elem_type_name(t.data_type())
        )
    })?;
    let n = element_count(&t.dims).ok_or("has invalid dims")?;
    let need = n.checked_mul(bits).ok_or("has invalid dims")?.div_ceil(8);
    // an empty typed field gives no bytes, as an empty raw_data does
    let bytes: Cow<[u8]> = match t.raw_data.as_deref() {
        Some(raw) if !raw.is_empty() => Cow::Borrowed(raw),
        _ => Cow::Owned(typed_bytes(t, bits)),
    };
    if bytes.len() != need {
        // Whole values only, as the count a reader would see.
        let held = if bits >= 8 {
            bytes.len() / (bits / 8)
        } else {
            bytes.len() * 2
        };
        return Err(format!(
            "holds {held} values where its dims {:?} need {n}",
            t.dims
        ));
    }
    Ok(bytes)
}

/// The typed field of `t` as little-endian bytes of `bits`-wide elements.
fn typed_bytes(t: &TensorProto, bits: usize) -> Vec<u8> {
    let dt = t.data_type();
    if dt == DataType::Float as i32 {
        return t.float_data.iter().flat_map(|v| v.to_le_bytes()).collect();
    }
    if dt == DataType::Double as i32 {
        return t.double_data.iter().flat_map(|v| v.to_le_bytes()).collect();
    }
    if dt == DataType::Int64 as i32 {
        return t.int64_data.iter().flat_map(|v| v.to_le_bytes()).collect();
    }
    if dt == DataType::Uint64 as i32 || dt == DataType::Uint32 as i32 {
        let w = bits / 8;
        return t
            .uint64_data
            .iter()
            .flat_map(|v| v.to_le_bytes()[..w].to_vec())
            .collect();
    }
    // int32_data: one element a value; 4-bit types hold one packed byte a value.
    let w = bits.max(8) / 8;
    t.int32_data
        .iter()
        .flat_map(|v| v.to_le_bytes()[..w].to_vec())
        .collect()
}

/// The values of an integer or bool tensor (int4/uint4 unpacked) as `i64` (uint64 values past
/// `i64::MAX` wrap).
pub fn ints(t: &TensorProto) -> Result<Vec<i64>, String> {
    let n = element_count(&t.dims).ok_or("has invalid dims")?;
    let dt =
        DataType::try_from(t.data_type()).map_err(|_| "has an unknown element type".to_string())?;
    let b = le_bytes(t)?;
    let v: Vec<i64> = match dt {
        DataType::Int4 | DataType::Uint4 => (0..n)
            .map(|i| {
                let nib = if i % 2 == 0 {
                    b[i / 2] & 0x0f
                } else {
                    b[i / 2] >> 4
                };
                if dt == DataType::Int4 && nib >= 8 {
                    i64::from(nib) - 16
                } else {
                    i64::from(nib)
                }
            })
            .collect(),
        DataType::Int8 => b.iter().map(|&x| i64::from(x as i8)).collect(),
        DataType::Uint8 | DataType::Bool => b.iter().map(|&x| i64::from(x)).collect(),
        DataType::Int16 => b
            .chunks_exact(2)
            .map(|c| i64::from(i16::from_le_bytes([c[0], c[1]])))
            .collect(),
        DataType::Uint16 => b
            .chunks_exact(2)
            .map(|c| i64::from(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        DataType::Int32 => b
            .chunks_exact(4)
            .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        DataType::Uint32 => b
            .chunks_exact(4)
            .map(|c| i64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        DataType::Int64 | DataType::Uint64 => b
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
        _ => {
            return Err(format!(
                "is {}, not an integer type",
                elem_type_name(t.data_type())
            ));
        }
    };
    Ok(v)
}

/// The values of a float32, float16, bfloat16 or float64 tensor as `f32`.
pub fn floats(t: &TensorProto) -> Result<Vec<f32>, String> {
    let dt =
        DataType::try_from(t.data_type()).map_err(|_| "has an unknown element type".to_string())?;
    let b = le_bytes(t)?;
    Ok(match dt {
        DataType::Float => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DataType::Float16 => b
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DataType::Bfloat16 => b
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DataType::Double => b
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect(),
        _ => {
            return Err(format!(
                "is {}, not a float type",
                elem_type_name(t.data_type())
            ));
        }
    })
}

/// `Err` unless `t` is of element type `want`.
fn expect_type(t: &TensorProto, want: DataType, name: &str) -> Result<(), String> {
    if t.data_type != Some(want as i32) {
        return Err(format!("is {}, not {name}", elem_type_name(t.data_type())));
    }
    Ok(())
}

/// The float32 values of a FLOAT tensor, from `raw_data` (little-endian) or `float_data`.
pub fn f32_data(t: &TensorProto) -> Result<Vec<f32>, String> {
    expect_type(t, DataType::Float, "float32")?;
    floats(t)
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
    expect_type(t, DataType::Int8, "int8")?;
    Ok(le_bytes(t)?.iter().map(|&b| b as i8).collect())
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
    expect_type(t, DataType::Int64, "int64")?;
    ints(t)
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

    fn typed(dt: DataType, dims: &[i64]) -> TensorProto {
        TensorProto {
            dims: dims.to_vec(),
            data_type: Some(dt as i32),
            ..Default::default()
        }
    }

    /// Each element type reads the same from `raw_data` and from its typed field.
    #[test]
    fn both_storages_decode_alike_for_every_type() {
        let v = [-3i64, 0, 5, -1, 7];
        let cases: Vec<(DataType, TensorProto)> = vec![
            (
                DataType::Int8,
                TensorProto {
                    int32_data: v.iter().map(|&x| x as i32).collect(),
                    ..typed(DataType::Int8, &[5])
                },
            ),
            (
                DataType::Int16,
                TensorProto {
                    int32_data: v.iter().map(|&x| x as i32 * 1000).collect(),
                    ..typed(DataType::Int16, &[5])
                },
            ),
            (
                DataType::Uint16,
                TensorProto {
                    int32_data: vec![0, 1, 65535, 300, 7],
                    ..typed(DataType::Uint16, &[5])
                },
            ),
            (
                DataType::Int32,
                TensorProto {
                    int32_data: vec![i32::MIN, -1, 0, 1, i32::MAX],
                    ..typed(DataType::Int32, &[5])
                },
            ),
            (
                DataType::Uint32,
                TensorProto {
                    uint64_data: vec![0, 1, u32::MAX as u64, 9, 2],
                    ..typed(DataType::Uint32, &[5])
                },
            ),
            (
                DataType::Int64,
                TensorProto {
                    int64_data: vec![i64::MIN, -1, 0, 1, i64::MAX],
                    ..typed(DataType::Int64, &[5])
                },
            ),
            (
                DataType::Bool,
                TensorProto {
                    int32_data: vec![1, 0, 1, 1, 0],
                    ..typed(DataType::Bool, &[5])
                },
            ),
            // Two int4 values a byte, the first in the low nibble: -3, 0 | 5, -1 | 7.
            (
                DataType::Int4,
                TensorProto {
                    int32_data: vec![0x0d, 0xf5, 0x07],
                    ..typed(DataType::Int4, &[5])
                },
            ),
        ];
        for (dt, t) in cases {
            let from_typed = ints(&t).unwrap();
            let mut raw = typed(dt, &t.dims);
            raw.raw_data = Some(le_bytes(&t).unwrap().into_owned().into());
            assert_eq!(ints(&raw).unwrap(), from_typed, "{dt:?}");
            assert_eq!(from_typed.len(), 5, "{dt:?}");
        }
        let int4 = TensorProto {
            int32_data: vec![0x0d, 0xf5, 0x07],
            ..typed(DataType::Int4, &[5])
        };
        assert_eq!(ints(&int4).unwrap(), vec![-3, 0, 5, -1, 7]);
        assert_eq!(
            ints(&i4_tensor("w", &[5], &[-3, 0, 5, -1, 7])).unwrap(),
            vec![-3, 0, 5, -1, 7]
        );
        let half = TensorProto {
            int32_data: vec![
                half::f16::from_f32(1.5).to_bits().into(),
                half::f16::from_f32(-2.0).to_bits().into(),
            ],
            ..typed(DataType::Float16, &[2])
        };
        assert_eq!(floats(&half).unwrap(), vec![1.5, -2.0]);
        let bf = TensorProto {
            int32_data: vec![half::bf16::from_f32(0.5).to_bits().into()],
            ..typed(DataType::Bfloat16, &[1])
        };
        assert_eq!(floats(&bf).unwrap(), vec![0.5]);
        let double = TensorProto {
            double_data: vec![0.25, 8.0],
            ..typed(DataType::Double, &[2])
        };
        assert_eq!(floats(&double).unwrap(), vec![0.25, 8.0]);
    }

    #[test]
    fn counts_types_and_ranges_are_checked() {
        // One int4 byte holds two values, not three.
        let short = TensorProto {
            int32_data: vec![0x11],
            ..typed(DataType::Int4, &[3])
        };
        assert!(
            ints(&short).unwrap_err().contains("need 3"),
            "{:?}",
            ints(&short)
        );
        let long = TensorProto {
            int64_data: vec![1, 2, 3],
            ..typed(DataType::Int64, &[2])
        };
        assert!(i64_data(&long).unwrap_err().contains("need 2"));
        assert!(
            ints(&f32_tensor("f", &[1], &[1.0]))
                .unwrap_err()
                .contains("float32")
        );
        assert!(
            floats(&i8_tensor("q", &[1], &[1]))
                .unwrap_err()
                .contains("int8")
        );
        let string = TensorProto {
            string_data: vec![b"a".to_vec().into()],
            ..typed(DataType::String, &[1])
        };
        assert!(le_bytes(&string).is_err());
        // The range table agrees with the element widths.
        for (dt, bits, signed) in [
            (DataType::Int4, 4, true),
            (DataType::Uint4, 4, false),
            (DataType::Int8, 8, true),
            (DataType::Uint8, 8, false),
            (DataType::Int16, 16, true),
            (DataType::Uint16, 16, false),
            (DataType::Int32, 32, true),
            (DataType::Uint32, 32, false),
            (DataType::Int64, 64, true),
            (DataType::Uint64, 64, false),
        ] {
            assert_eq!(elem_bits(dt as i32), Some(bits));
            let (lo, hi) = int_range(dt as i32).unwrap();
            assert_eq!(hi - lo + 1, 1i128 << bits, "{dt:?}");
            assert_eq!(lo < 0, signed, "{dt:?}");
        }
        assert_eq!(int_range(DataType::Float as i32), None);
    }

    #[test]
    fn element_count_guards_overflow() {
        assert_eq!(element_count(&[2, 3]), Some(6));
        assert_eq!(element_count(&[]), Some(1));
        assert_eq!(element_count(&[-1, 3]), None);
        assert_eq!(element_count(&[i64::MAX, 4]), None);
    }
}
