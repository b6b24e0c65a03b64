//! Element types and the one in-memory array form calibration samples take (little-endian
//! bytes, row-major), with the casts we allow when a file's dtype differs from the input's.

pub use crate::ir::Elem;

/// A model input as calibration sees it.
#[derive(Clone, Debug)]
pub struct InputSpec {
    pub name: String,
    pub elem: Elem,
    /// `None` for symbolic or unknown dims.
    pub dims: Vec<Option<usize>>,
}

impl InputSpec {
    /// A float32 input `x` of `dims`, for tests.
    #[cfg(test)]
    pub(crate) fn f32_for_test(dims: &[Option<usize>]) -> InputSpec {
        InputSpec {
            name: "x".into(),
            elem: Elem::F32,
            dims: dims.to_vec(),
        }
    }

    pub(super) fn describe(&self) -> String {
        let dims: Vec<String> = self
            .dims
            .iter()
            .map(|d| d.map_or("?".into(), |v| v.to_string()))
            .collect();
        format!("{} {}", self.elem.name(), shape_str(&dims))
    }
}

/// A dense array: `data` holds `shape.product() * elem.size()` little-endian bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    pub elem: Elem,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl Array {
    /// Its values for messages: `16000`, `[1,2,3]`, or the shape past 8 values.
    pub fn describe_values(&self) -> String {
        let n = self.shape.iter().product::<usize>();
        if n > 8 || self.data.len() != n * self.elem.size() {
            return format!("{} {}", self.elem.name(), shape_str(&self.shape));
        }
        let values: Vec<String> = self
            .data
            .chunks_exact(self.elem.size())
            .map(|b| {
                if self.elem.is_float() {
                    read_f64(self.elem, b).to_string()
                } else if self.elem == Elem::Bool {
                    (b[0] != 0).to_string()
                } else {
                    read_i128(self.elem, b).to_string()
                }
            })
            .collect();
        if self.shape.is_empty() {
            values.join("")
        } else {
            format!("[{}]", values.join(","))
        }
    }
}

/// Shape as `[a,b,c]` for messages; `None` dims print as their symbol.
pub fn shape_str<T: std::fmt::Display>(dims: &[T]) -> String {
    let d: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", d.join(","))
}

fn read_f64(elem: Elem, b: &[u8]) -> f64 {
    match elem {
        Elem::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f64(),
        Elem::F32 => f32::from_le_bytes(b.try_into().expect("4 bytes")) as f64,
        Elem::F64 => f64::from_le_bytes(b.try_into().expect("8 bytes")),
        _ => unreachable!("float element"),
    }
}

fn read_i128(elem: Elem, b: &[u8]) -> i128 {
    use Elem::*;
    match elem {
        I8 => b[0] as i8 as i128,
        U8 | Bool => b[0] as i128,
        I16 => i16::from_le_bytes([b[0], b[1]]) as i128,
        U16 => u16::from_le_bytes([b[0], b[1]]) as i128,
        I32 => i32::from_le_bytes(b.try_into().expect("4 bytes")) as i128,
        U32 => u32::from_le_bytes(b.try_into().expect("4 bytes")) as i128,
        I64 => i64::from_le_bytes(b.try_into().expect("8 bytes")) as i128,
        U64 => u64::from_le_bytes(b.try_into().expect("8 bytes")) as i128,
        _ => unreachable!("integer element"),
    }
}

fn int_range(elem: Elem) -> (i128, i128) {
    crate::onnx::tensor::int_range(elem.to_onnx()).expect("integer element")
}

/// Converts little-endian `bytes` of `from` elements to `to` elements. `casts_to` must hold;
/// an integer that does not fit `to` is an error.
pub fn convert(from: Elem, bytes: &[u8], to: Elem) -> Result<Vec<u8>, String> {
    if from == to {
        return Ok(bytes.to_vec());
    }
    let n = bytes.len() / from.size();
    let mut out = Vec::with_capacity(n * to.size());
    for b in bytes.chunks_exact(from.size()) {
        if to.is_float() {
            let v = read_f64(from, b);
            match to {
                Elem::F16 => out.extend(half::f16::from_f64(v).to_le_bytes()),
                Elem::F32 => out.extend((v as f32).to_le_bytes()),
                _ => out.extend(v.to_le_bytes()),
            }
        } else {
            let v = read_i128(from, b);
            let (lo, hi) = int_range(to);
            if v < lo || v > hi {
                return Err(format!("value {v} does not fit {}", to.name()));
            }
            out.extend(&v.to_le_bytes()[..to.size()]);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_casts_keep_values() {
        let src: Vec<u8> = [1.5f64, -2.25]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let out = convert(Elem::F64, &src, Elem::F32).unwrap();
        assert_eq!(
            out,
            [1.5f32, -2.25]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn integer_casts_are_range_checked() {
        let src: Vec<u8> = [3i64, -4].iter().flat_map(|v| v.to_le_bytes()).collect();
        let out = convert(Elem::I64, &src, Elem::I32).unwrap();
        assert_eq!(
            out,
            [3i32, -4]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<_>>()
        );
        assert!(
            convert(Elem::I64, &src, Elem::U8)
                .unwrap_err()
                .contains("-4")
        );
    }

    #[test]
    fn only_sensible_casts_are_allowed() {
        assert!(Elem::F64.casts_to(Elem::F32));
        assert!(Elem::I32.casts_to(Elem::I64));
        assert!(!Elem::I64.casts_to(Elem::F32));
        assert!(!Elem::F32.casts_to(Elem::I64));
        assert!(!Elem::Bool.casts_to(Elem::U8));
    }
}
