//! NumPy `.npy` headers (format versions 1-3) and `.npz` archives (zip of `.npy`, stored or
//! deflated), read as streams: a header is parsed and its size checked against the bytes that
//! are really there before anything is allocated, then data is read sample by sample.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::array::Elem;

/// The parsed header of one `.npy` array.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    pub elem: Elem,
    pub shape: Vec<usize>,
    /// Bytes of magic + header: the data starts here.
    pub data_offset: u64,
}

impl Header {
    /// Bytes of data the header promises, `None` on overflow.
    pub fn data_len(&self) -> Option<u64> {
        self.shape
            .iter()
            .try_fold(self.elem.size() as u64, |acc, &d| acc.checked_mul(d as u64))
    }
}

const MAGIC: &[u8] = b"\x93NUMPY";
/// numpy itself caps headers well below this; anything larger is not a real header.
const MAX_HEADER: usize = 1 << 20;

/// Reads and parses a header from the start of `r`.
pub fn read_header(r: &mut impl Read) -> Result<Header, String> {
    let mut pre = [0u8; 8];
    r.read_exact(&mut pre)
        .map_err(|_| "not a .npy array (too short)".to_string())?;
    if &pre[..6] != MAGIC {
        return Err("not a .npy array (bad magic)".into());
    }
    let (len, prefix) = match pre[6] {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).map_err(|e| e.to_string())?;
            (u16::from_le_bytes(b) as usize, 10)
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).map_err(|e| e.to_string())?;
            (u32::from_le_bytes(b) as usize, 12)
        }
        v => return Err(format!("unsupported .npy format version {v}")),
    };
    if len > MAX_HEADER {
        return Err(format!("header claims {len} bytes: not a real .npy header"));
    }
    let mut text = vec![0u8; len];
    r.read_exact(&mut text)
        .map_err(|_| "truncated .npy header".to_string())?;
    let text = String::from_utf8(text).map_err(|_| "header is not text".to_string())?;
    let (elem, shape) = parse_dict(&text)?;
    Ok(Header {
        elem,
        shape,
        data_offset: (prefix + len) as u64,
    })
}

fn parse_dict(text: &str) -> Result<(Elem, Vec<usize>), String> {
    let value_of = |key: &str| -> Result<&str, String> {
        let at = text
            .find(&format!("'{key}'"))
            .ok_or(format!("header has no '{key}'"))?;
        let rest = &text[at + key.len() + 2..];
        let colon = rest
            .find(':')
            .ok_or(format!("header '{key}' has no value"))?;
        Ok(rest[colon + 1..].trim_start())
    };
    let descr = value_of("descr")?;
    let descr = descr
        .strip_prefix('\'')
        .and_then(|d| d.split('\'').next())
        .ok_or(
            "header 'descr' is not a simple dtype string (structured arrays are not supported)",
        )?;
    let elem = parse_descr(descr)?;
    if value_of("fortran_order")?.starts_with("True") {
        return Err(
            "Fortran-ordered arrays are not supported (save with np.ascontiguousarray)".into(),
        );
    }
    let shape = value_of("shape")?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("header 'shape' is not a tuple")?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad dimension `{s}` in header 'shape'"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((elem, shape))
}

fn parse_descr(descr: &str) -> Result<Elem, String> {
    // the byte-order mark is one ASCII character; anything else is not a dtype we read (split
    // on a character boundary: the header is arbitrary text)
    let (order, code) = match descr.char_indices().nth(1) {
        Some((i, _)) => descr.split_at(i),
        None => (descr, ""),
    };
    let elem = match code {
        "f2" => Elem::F16,
        "f4" => Elem::F32,
        "f8" => Elem::F64,
        "i1" => Elem::I8,
        "i2" => Elem::I16,
        "i4" => Elem::I32,
        "i8" => Elem::I64,
        "u1" => Elem::U8,
        "u2" => Elem::U16,
        "u4" => Elem::U32,
        "u8" => Elem::U64,
        "b1" => Elem::Bool,
        _ => return Err(format!("unsupported dtype `{descr}`")),
    };
    match order {
        "<" | "|" | "=" => Ok(elem),
        ">" if elem.size() == 1 => Ok(elem),
        _ => Err(format!("big-endian dtype `{descr}` is not supported")),
    }
}

/// A reader positioned at the data of one array, and its header. The reader is owned (no
/// borrow of an archive), so several arrays of one `.npz` can be streamed side by side.
pub struct ArrayStream {
    pub header: Header,
    pub reader: Box<dyn Read + Send>,
}

/// Opens a `.npy` file and checks that its data size matches its header.
pub fn open_npy(path: &Path) -> Result<ArrayStream, String> {
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    let total = file.metadata().map_err(|e| e.to_string())?.len();
    let header = read_header(&mut BufReader::new(&mut file))?;
    check_size(&header, total.saturating_sub(header.data_offset))?;
    file.seek(SeekFrom::Start(header.data_offset))
        .map_err(|e| e.to_string())?;
    Ok(ArrayStream {
        header,
        reader: Box::new(BufReader::with_capacity(1 << 20, file)),
    })
}

fn check_size(header: &Header, available: u64) -> Result<(), String> {
    match header.data_len() {
        Some(n) if n == available => Ok(()),
        Some(n) => Err(format!(
            "header promises {n} bytes of {} {:?} but the file holds {available}",
            header.elem.name(),
            header.shape
        )),
        None => Err(format!("header shape {:?} overflows", header.shape)),
    }
}

/// One array entry of a `.npz` archive.
#[derive(Clone, Debug)]
pub struct NpzEntry {
    /// Key: the entry name without `.npy`.
    pub key: String,
    index: usize,
}

/// Lists the arrays of a `.npz` archive, in archive order.
pub fn npz_entries(path: &Path) -> Result<Vec<NpzEntry>, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| format!("not a .npz (zip) archive: {e}"))?;
    let mut out = Vec::new();
    for index in 0..zip.len() {
        let entry = zip.by_index_raw(index).map_err(|e| e.to_string())?;
        let name = entry.name().map_err(|e| e.to_string())?;
        if let Some(key) = name.strip_suffix(".npy") {
            out.push(NpzEntry {
                key: key.to_string(),
                index,
            });
        }
    }
    Ok(out)
}

/// Opens one entry of a `.npz` for streaming, checking its size against its header.
pub fn open_npz_entry(path: &Path, entry: &NpzEntry) -> Result<ArrayStream, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| e.to_string())?;
    let (start, compressed, size, method) = {
        let e = zip.by_index_raw(entry.index).map_err(|e| e.to_string())?;
        if e.encrypted() {
            return Err(format!("entry `{}` is encrypted", entry.key));
        }
        (
            e.data_start().ok_or("entry has no data")?,
            e.compressed_size(),
            e.size(),
            e.compression(),
        )
    };
    let mut file = zip.into_inner().into_inner();
    file.seek(SeekFrom::Start(start))
        .map_err(|e| e.to_string())?;
    let raw = BufReader::with_capacity(1 << 20, file).take(compressed);
    let mut reader: Box<dyn Read + Send> = match method {
        zip::CompressionMethod::Stored => Box::new(raw),
        zip::CompressionMethod::Deflated => {
            Box::new(BufReader::new(flate2::read::DeflateDecoder::new(raw)))
        }
        m => {
            return Err(format!(
                "entry `{}` uses unsupported compression {m:?}",
                entry.key
            ));
        }
    };
    let header = read_header(&mut reader).map_err(|e| format!("entry `{}`: {e}", entry.key))?;
    check_size(&header, size.saturating_sub(header.data_offset))
        .map_err(|e| format!("entry `{}`: {e}", entry.key))?;
    Ok(ArrayStream { header, reader })
}

/// A `.npy` (format 1.0) of little-endian float32 values.
pub fn npy_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple}, }}");
    // magic (6) + version (2) + length (2) + header + newline, padded to 64 bytes
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + 4 * data.len());
    out.extend(MAGIC);
    out.extend([1, 0]);
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(data.iter().flat_map(|v| v.to_le_bytes()));
    out
}

/// One named f32 array: name, shape, row-major data.
pub type NamedArray = (String, Vec<usize>, Vec<f32>);

/// A `.npz` (stored zip, fixed timestamps: same arrays, same bytes) of float32 arrays.
pub fn npz_f32(arrays: &[NamedArray]) -> Result<Vec<u8>, String> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(arrays.iter().map(|a| 4 * a.2.len()).sum::<usize>() > u32::MAX as usize / 2);
    for (key, shape, data) in arrays {
        zip.start_file(format!("{key}.npy"), opts)
            .map_err(|e| e.to_string())?;
        zip.write_all(&npy_f32(shape, data))
            .map_err(|e| e.to_string())?;
    }
    Ok(zip.finish().map_err(|e| e.to_string())?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(header: &str, data: &[u8]) -> Vec<u8> {
        let mut h = header.to_string();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut v = MAGIC.to_vec();
        v.extend([1, 0]);
        v.extend((h.len() as u16).to_le_bytes());
        v.extend(h.as_bytes());
        v.extend(data);
        v
    }

    #[test]
    fn parses_numpy_headers() {
        let bytes = npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
            &[0; 24],
        );
        let h = read_header(&mut &bytes[..]).unwrap();
        assert_eq!(h.elem, Elem::F32);
        assert_eq!(h.shape, vec![2, 3]);
        assert_eq!(h.data_offset as usize, bytes.len() - 24);
        let scalar = npy(
            "{'descr': '|b1', 'fortran_order': False, 'shape': (), }",
            &[1],
        );
        assert_eq!(
            read_header(&mut &scalar[..]).unwrap().shape,
            Vec::<usize>::new()
        );
        let one = npy(
            "{'descr': '<i8', 'fortran_order': False, 'shape': (5,), }",
            &[],
        );
        assert_eq!(read_header(&mut &one[..]).unwrap().shape, vec![5]);
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        let cases = [
            (
                "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }",
                "big-endian",
            ),
            (
                "{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }",
                "Fortran",
            ),
            (
                "{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }",
                "unsupported dtype",
            ),
            (
                // found by fuzzing (fuzz/seeds/calib_file/crash-npy-descr-not-ascii): a
                // multi-byte first character was once split inside itself
                "{'descr': '\u{299}4', 'fortran_order': False, 'shape': (2,), }",
                "unsupported dtype",
            ),
            (
                "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }",
                "structured",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (x,), }",
                "bad dimension",
            ),
        ];
        for (h, want) in cases {
            let err = read_header(&mut &npy(h, &[])[..]).unwrap_err();
            assert!(err.contains(want), "{h}: {err}");
        }
        assert!(
            read_header(&mut &b"PK\x03\x04...."[..])
                .unwrap_err()
                .contains("magic")
        );
    }

    #[test]
    fn absurd_sizes_are_refused_before_allocating() {
        let h = Header {
            elem: Elem::F64,
            shape: vec![usize::MAX / 2, 4],
            data_offset: 64,
        };
        assert!(check_size(&h, 100).unwrap_err().contains("overflows"));
        let h = Header {
            elem: Elem::F32,
            shape: vec![1 << 40],
            data_offset: 64,
        };
        assert!(check_size(&h, 100).unwrap_err().contains("holds 100"));
        let mut huge = MAGIC.to_vec();
        huge.extend([2, 0]);
        huge.extend(u32::MAX.to_le_bytes());
        assert!(
            read_header(&mut &huge[..])
                .unwrap_err()
                .contains("not a real")
        );
    }

    #[test]
    fn written_npz_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.npz");
        let bytes = npz_f32(&[
            ("a".into(), vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, -6.5]),
            ("b/c".into(), vec![1], vec![7.0]),
        ])
        .unwrap();
        std::fs::write(&path, &bytes).unwrap();
        let entries = npz_entries(&path).unwrap();
        let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["a", "b/c"]);
        let mut s = open_npz_entry(&path, &entries[0]).unwrap();
        assert_eq!(s.header.shape, vec![2, 3]);
        assert_eq!(s.header.elem, Elem::F32);
        let mut data = Vec::new();
        s.reader.read_to_end(&mut data).unwrap();
        assert_eq!(&data[20..24], &(-6.5f32).to_le_bytes());
        assert_eq!(
            npz_f32(&[("a".into(), vec![1], vec![1.0])]).unwrap(),
            npz_f32(&[("a".into(), vec![1], vec![1.0])]).unwrap()
        );
    }
}
