//! The element types and typed shapes the planner and calibration share.

use crate::proto::tensor_proto::DataType;

/// Element types calibration data and typed tensors may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Elem {
    F16,
    F32,
    F64,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    Bool,
}

impl Elem {
    pub fn size(self) -> usize {
        use Elem::*;
        match self {
            I8 | U8 | Bool => 1,
            F16 | I16 | U16 => 2,
            F32 | I32 | U32 => 4,
            F64 | I64 | U64 => 8,
        }
    }

    pub fn name(self) -> &'static str {
        use Elem::*;
        match self {
            F16 => "float16",
            F32 => "float32",
            F64 => "float64",
            I8 => "int8",
            I16 => "int16",
            I32 => "int32",
            I64 => "int64",
            U8 => "uint8",
            U16 => "uint16",
            U32 => "uint32",
            U64 => "uint64",
            Bool => "bool",
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, Elem::F16 | Elem::F32 | Elem::F64)
    }

    /// The element type of an ONNX `TensorProto.DataType`, if calibration supports it.
    pub fn from_onnx(data_type: i32) -> Option<Elem> {
        use DataType as D;
        Some(match D::try_from(data_type).ok()? {
            D::Float16 => Elem::F16,
            D::Float => Elem::F32,
            D::Double => Elem::F64,
            D::Int8 => Elem::I8,
            D::Int16 => Elem::I16,
            D::Int32 => Elem::I32,
            D::Int64 => Elem::I64,
            D::Uint8 => Elem::U8,
            D::Uint16 => Elem::U16,
            D::Uint32 => Elem::U32,
            D::Uint64 => Elem::U64,
            D::Bool => Elem::Bool,
            _ => return None,
        })
    }

    /// Its ONNX `TensorProto.DataType`.
    pub fn to_onnx(self) -> i32 {
        use DataType as D;
        (match self {
            Elem::F16 => D::Float16,
            Elem::F32 => D::Float,
            Elem::F64 => D::Double,
            Elem::I8 => D::Int8,
            Elem::I16 => D::Int16,
            Elem::I32 => D::Int32,
            Elem::I64 => D::Int64,
            Elem::U8 => D::Uint8,
            Elem::U16 => D::Uint16,
            Elem::U32 => D::Uint32,
            Elem::U64 => D::Uint64,
            Elem::Bool => D::Bool,
        }) as i32
    }

    /// Whether data of type `self` may feed an input of type `to`: floats to floats, integers
    /// to integers (values are range-checked), bool to bool.
    pub fn casts_to(self, to: Elem) -> bool {
        self == to || (self.is_float() && to.is_float()) || (self.is_int() && to.is_int())
    }

    fn is_int(self) -> bool {
        !self.is_float() && self != Elem::Bool
    }
}

/// What typing the model found out about one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// `None` for types calibration does not handle (strings, opaque, ...).
    pub elem: Option<Elem>,
    /// Each dimension, `None` where it is symbolic (e.g. a batch the data does not fix).
    pub shape: Vec<Option<usize>>,
}
