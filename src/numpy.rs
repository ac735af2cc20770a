//! NumPy arrays as data: `.npy` files (`numpy.save`) and `.npz` archives of them
//! (`numpy.savez`, `numpy.savez_compressed`, and the `mnist.npz` of `keras.datasets`), read
//! through the `npyz` and `zip` crates.
//!
//! Arrays are found by name: `x_train`, `y_train` and optionally `x_test`, `y_test` (Keras's
//! layout), or `x` and `y` for one set that is cut into training and test splits. Features are
//! u8 (kept as bytes, scaled by 1/255 as MNIST's are), f32 or f64 (floats), or other integers
//! (as floats), of any shape `[n, ...]` whose trailing dimensions flatten to the features
//! (`[n, h, w]` and `[n, h, w, c]` u8 arrays are images); labels are integers, `[n]` or `[n, 1]`.
//! Each array's header is checked against the bytes that follow it before its data is read,
//! and an archive's members are decompressed no further than the size they claim.

use crate::data_spec::MAX_CLASSES;
use crate::dataset::{Dataset, Features, Splits};
use crate::error::{Error, Result};
use npyz::{DType, NpyFile, Order, TypeChar};
use std::io::Read;

/// Largest array accepted, in bytes (as for an IDX file).
const MAX_ARRAY_BYTES: u64 = 1 << 32;
/// Most values in one array: what is read is widened (to i64 for integers, then f32 for
/// features), so the count, not the stored bytes, bounds the memory a small file can claim
/// (a deflated `.npz` of int8 zeros is tiny). 2^28 values: 1 GiB as f32.
const MAX_ELEMENTS: u64 = 1 << 28;
/// The arrays `splits` looks for; an archive's other members are not read.
const NAMES: [&str; 6] = ["x_train", "y_train", "x_test", "y_test", "x", "y"];

/// One array's values, by kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    Bytes(Vec<u8>),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
}

/// An array read from a `.npy` file or an `.npz` member.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    /// Its name: the member or file name without `.npy`.
    pub name: String,
    pub shape: Vec<u64>,
    pub values: Values,
}

/// The longest `.npy` header accepted (numpy writes a few hundred bytes; format 2 could claim
/// 4 GiB).
const MAX_HEADER: usize = 1 << 16;
/// The deepest nesting of brackets accepted in a header (a structured type nests a few levels):
/// the header's Python-literal parser takes exponential time on deep nesting (found by fuzzing).
const MAX_HEADER_DEPTH: usize = 8;

/// Checks an `.npy` header's length and nesting before it is parsed.
fn check_header(bytes: &[u8]) -> std::result::Result<(), String> {
    let len_at = 8;
    let (start, len) = match (bytes.get(..6), bytes.get(6)) {
        (Some(b"\x93NUMPY"), Some(1)) if bytes.len() >= 10 => {
            (10, u16::from_le_bytes([bytes[8], bytes[9]]) as usize)
        }
        (Some(b"\x93NUMPY"), Some(2 | 3)) if bytes.len() >= 12 => (
            12,
            u32::from_le_bytes(bytes[len_at..12].try_into().expect("4 bytes")) as usize,
        ),
        _ => return Err("no .npy magic and version at its start".into()),
    };
    if len > MAX_HEADER || start + len > bytes.len() {
        return Err(format!(
            "its header claims {len} bytes; the file holds {} and gpumlp reads headers up to {MAX_HEADER}",
            bytes.len().saturating_sub(start)
        ));
    }
    let header = &bytes[start..start + len];
    let mut depth = 0usize;
    for &b in header {
        match b {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_HEADER_DEPTH {
            return Err(format!(
                "its header nests brackets deeper than the {MAX_HEADER_DEPTH} levels gpumlp reads"
            ));
        }
    }
    // The shape's dimensions and every product of them must fit 64 bits (the header parser's
    // arithmetic assumes they do; found by fuzzing): zeros are left out of the product, so a
    // leading 0 hides nothing. The key may be quoted either way.
    let text = String::from_utf8_lossy(header);
    let after_key = text
        .split_once("'shape'")
        .or_else(|| text.split_once("\"shape\""))
        .map(|(_, rest)| rest);
    if let Some(tuple) = after_key
        .and_then(|rest| rest.split_once('('))
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(tuple, _)| tuple)
    {
        let mut count = 1u64;
        for dim in tuple.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            let d = dim.parse::<u64>().map_err(|_| {
                format!("its shape ({tuple}) is not a tuple of dimensions that fit 64 bits")
            })?;
            count = count
                .checked_mul(d.max(1))
                .filter(|&c| c <= MAX_ELEMENTS)
                .ok_or_else(|| {
                    format!("its shape ({tuple}) holds more than the {MAX_ELEMENTS} values gpumlp reads")
                })?;
        }
    }
    Ok(())
}

/// Reads one `.npy` array; `name` (a path, usually) is used in errors, `key` names the array.
pub fn read_npy(name: &str, key: &str, bytes: &[u8]) -> Result<Array> {
    let bad = |reason: String| Error::data(name, reason);
    check_header(bytes).map_err(|e| bad(format!("not a NumPy .npy array: {e}")))?;
    let npy = NpyFile::new(bytes).map_err(|e| bad(format!("not a NumPy .npy array ({e})")))?;
    let shape = npy.shape().to_vec();
    if npy.order() == Order::Fortran {
        return Err(bad(format!(
            "array {key} is stored in Fortran order; save it with numpy.ascontiguousarray"
        )));
    }
    let dtype = match npy.dtype() {
        DType::Plain(t) => t,
        other => {
            return Err(bad(format!(
                "array {key} has the structured type {}; expected numbers",
                other.descr()
            )))
        }
    };
    let count = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| {
            n.checked_mul(dtype.size_field())
                .is_some_and(|b| b <= MAX_ARRAY_BYTES)
        })
        .ok_or_else(|| {
            bad(format!(
                "array {key} of shape {shape:?} is larger than the {MAX_ELEMENTS} values or 4 GiB gpumlp reads"
            ))
        })?;
    let (kind, size) = (dtype.type_char(), dtype.size_field());
    let supported = matches!(
        (kind, size),
        (TypeChar::Uint | TypeChar::Int, 1 | 2 | 4 | 8)
            | (TypeChar::Float, 4 | 8)
            | (TypeChar::Bool, 1)
    );
    if !supported {
        return Err(bad(format!(
            "array {key} holds {dtype}; gpumlp reads integers, floats and booleans"
        )));
    }
    // The data must all be there, and no more, before anything is allocated from the header.
    let data = npy.into_inner();
    let expected = count * size;
    if data.len() as u64 != expected {
        return Err(bad(format!(
            "array {key}: its header claims {shape:?} of {dtype} ({expected} bytes) but {} bytes follow",
            data.len()
        )));
    }
    let npy = NpyFile::new(bytes).map_err(|e| bad(format!("unreadable .npy ({e})")))?;
    let read_err = |e: std::io::Error| bad(format!("array {key}: {e}"));
    let ints = |v: Vec<i64>| Values::Ints(v);
    let values = match (kind, size) {
        (TypeChar::Uint, 1) | (TypeChar::Bool, 1) => {
            Values::Bytes(npy.into_vec::<u8>().map_err(read_err)?)
        }
        (TypeChar::Float, 4) => Values::Floats(npy.into_vec::<f32>().map_err(read_err)?),
        (TypeChar::Float, _) => Values::Floats(
            npy.into_vec::<f64>()
                .map_err(read_err)?
                .into_iter()
                .map(|x| x as f32)
                .collect(),
        ),
        (TypeChar::Int, 1) => ints(widen(npy.into_vec::<i8>().map_err(read_err)?)),
        (TypeChar::Int, 2) => ints(widen(npy.into_vec::<i16>().map_err(read_err)?)),
        (TypeChar::Int, 4) => ints(widen(npy.into_vec::<i32>().map_err(read_err)?)),
        (TypeChar::Int, _) => ints(npy.into_vec::<i64>().map_err(read_err)?),
        (TypeChar::Uint, 2) => ints(widen(npy.into_vec::<u16>().map_err(read_err)?)),
        (TypeChar::Uint, 4) => ints(widen(npy.into_vec::<u32>().map_err(read_err)?)),
        (_, _) => ints(
            npy.into_vec::<u64>()
                .map_err(read_err)?
                .into_iter()
                .map(|x| i64::try_from(x).unwrap_or(i64::MAX))
                .collect(),
        ),
    };
    Ok(Array {
        name: key.to_string(),
        shape,
        values,
    })
}

fn widen<T: Into<i64>>(v: Vec<T>) -> Vec<i64> {
    v.into_iter().map(Into::into).collect()
}

/// Reads every `.npy` member of an `.npz` archive.
pub fn read_npz(name: &str, bytes: &[u8]) -> Result<Vec<Array>> {
    let bad = |reason: String| Error::data(name, reason);
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| bad(format!("not a NumPy .npz archive ({e})")))?;
    let mut arrays = Vec::new();
    for i in 0..zip.len() {
        let mut member = zip
            .by_index(i)
            .map_err(|e| bad(format!("member {i} is unreadable ({e})")))?;
        let member_name = member
            .name()
            .map_err(|e| bad(format!("member {i} has an unreadable name ({e})")))?
            .to_string();
        let Some(key) = member_name
            .strip_suffix(".npy")
            .filter(|k| NAMES.contains(k))
        else {
            continue;
        };
        let key = key.to_string();
        let claimed = member.size();
        if claimed > MAX_ARRAY_BYTES + 4096 {
            return Err(bad(format!(
                "member {member_name} claims {claimed} bytes, more than the 4 GiB gpumlp reads"
            )));
        }
        // Grows with what the stream really yields, never past what the member claims.
        let mut data = Vec::with_capacity((claimed as usize).min(1 << 24));
        (&mut member)
            .take(claimed + 1)
            .read_to_end(&mut data)
            .map_err(|e| bad(format!("member {member_name} is corrupt ({e})")))?;
        if data.len() as u64 != claimed {
            return Err(bad(format!(
                "member {member_name} holds {} bytes, not the {claimed} it claims",
                data.len()
            )));
        }
        arrays.push(read_npy(&format!("{name} ({member_name})"), &key, &data)?);
    }
    Ok(arrays)
}

/// Training and test splits from named arrays (`x_train`, `y_train`, and `x_test`, `y_test`
/// or else a cut of `test_fraction` of the training arrays; or `x`, `y` cut the same way).
pub fn splits(name: &str, mut arrays: Vec<Array>, test_fraction: f64) -> Result<Splits> {
    let mut take = |key: &str| {
        arrays
            .iter()
            .position(|a| a.name == key)
            .map(|i| arrays.swap_remove(i))
    };
    let pair = |x: Array, y: Array| -> Result<(Dataset, Option<[usize; 3]>)> { pair(name, x, y) };
    match (
        take("x_train"),
        take("y_train"),
        take("x_test"),
        take("y_test"),
    ) {
        (Some(x), Some(y), Some(tx), Some(ty)) => {
            let (train, image) = pair(x, y)?;
            let (test, _) = pair(tx, ty)?;
            Splits::new(name, train, test, image, None)
        }
        (Some(x), Some(y), None, None) => {
            let (all, image) = pair(x, y)?;
            Splits::cut(name, all, test_fraction, image, None)
        }
        (None, None, None, None) => match (take("x"), take("y")) {
            (Some(x), Some(y)) => {
                let (all, image) = pair(x, y)?;
                Splits::cut(name, all, test_fraction, image, None)
            }
            _ => Err(Error::data(
                name,
                "no arrays named x_train and y_train (and x_test, y_test), or x and y",
            )),
        },
        _ => Err(Error::data(
            name,
            "x_train and y_train go together, and x_test and y_test",
        )),
    }
}

/// Features `x` and labels `y` as a dataset, with the image shape of a u8 `[n, h, w(, c)]`.
fn pair(name: &str, x: Array, y: Array) -> Result<(Dataset, Option<[usize; 3]>)> {
    let (features, width, image) = features(name, x)?;
    let labels = labels(name, y)?;
    Ok((Dataset::new(name, features, width, labels)?, image))
}

/// An array's values as the features of its first dimension's samples.
pub fn features(name: &str, x: Array) -> Result<(Features, usize, Option<[usize; 3]>)> {
    let Some((&n, rest)) = x.shape.split_first() else {
        return Err(Error::data(
            name,
            format!("array {} is a scalar, not samples of features", x.name),
        ));
    };
    let width: u64 = rest.iter().product();
    if width == 0 || n == 0 {
        return Err(Error::data(
            name,
            format!("array {} of shape {:?} holds no features", x.name, x.shape),
        ));
    }
    let dims: Vec<usize> = rest.iter().map(|&d| d as usize).collect();
    let image = match (&x.values, dims.as_slice()) {
        (Values::Bytes(_), &[h, w]) => Some([h, w, 1]),
        (Values::Bytes(_), &[h, w, c]) if matches!(c, 1 | 3 | 4) => Some([h, w, c]),
        _ => None,
    };
    let features = match x.values {
        Values::Bytes(v) => Features::Bytes(v),
        Values::Floats(v) => Features::Floats(v),
        Values::Ints(v) => Features::Floats(v.into_iter().map(|i| i as f32).collect()),
    };
    Ok((features, width as usize, image))
}

/// An array's values as class labels.
pub fn labels(name: &str, y: Array) -> Result<Vec<u32>> {
    let flat = matches!(y.shape.as_slice(), [_] | [_, 1]);
    if !flat {
        return Err(Error::data(
            name,
            format!(
                "labels {} have shape {:?}; expected [n] or [n, 1] class numbers",
                y.name, y.shape
            ),
        ));
    }
    let out_of_range = |at: usize, value: String| {
        Error::data(
            name,
            format!(
                "label {value} at index {at} of {} is not a class 0 to {}",
                y.name,
                MAX_CLASSES - 1
            ),
        )
    };
    match y.values {
        Values::Bytes(v) => Ok(v.into_iter().map(u32::from).collect()),
        Values::Ints(v) => v
            .iter()
            .enumerate()
            .map(|(at, &l)| {
                if (0..MAX_CLASSES as i64).contains(&l) {
                    Ok(l as u32)
                } else {
                    Err(out_of_range(at, l.to_string()))
                }
            })
            .collect(),
        Values::Floats(_) => Err(Error::data(
            name,
            format!(
                "labels {} are floats; expected integer class numbers",
                y.name
            ),
        )),
    }
}

/// Encodes values as a `.npy` file (format 1.0, C order, little-endian) of `shape`: the
/// tests and tools use it.
pub fn encode_npy(shape: &[usize], values: &Values) -> Vec<u8> {
    let (descr, data): (&str, Vec<u8>) = match values {
        Values::Bytes(v) => ("|u1", v.clone()),
        Values::Floats(v) => ("<f4", bytemuck::cast_slice(v).to_vec()),
        Values::Ints(v) => ("<i8", bytemuck::cast_slice(v).to_vec()),
    };
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let tuple = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple}, }}");
    // Magic, version and length take 10 bytes; the header ends in a newline at a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&data);
    out
}

/// Encodes named `.npy` files as an `.npz` archive (deflated, as `numpy.savez_compressed`
/// writes it, or stored, as `numpy.savez`).
pub fn encode_npz(arrays: &[(&str, Vec<u8>)], compressed: bool) -> Vec<u8> {
    use std::io::Write;
    let method = if compressed {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(method)
        .large_file(
            arrays
                .iter()
                .any(|(_, a)| a.len() as u64 >= u32::MAX as u64),
        );
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, npy) in arrays {
        zip.start_file(format!("{name}.npy"), options)
            .and_then(|_| zip.write_all(npy).map_err(Into::into))
            .expect("writing to memory");
    }
    zip.finish().expect("writing to memory").into_inner()
}
