//! IDX files (the MNIST container format), raw or gzip-compressed.
//!
//! An IDX file is a big-endian header (`0x00 0x00 type ndim`, then `ndim` u32 dimensions) followed
//! by the data. Images are type 0x08 (u8) with 3 dimensions `[count, height, width]` (MNIST:
//! 28x28) or 4 `[count, height, width, channels]`, labels type 0x08 with 1 dimension `[count]`.
//! Everything is checked against the bytes actually present before anything is allocated from a
//! header, so a corrupt header claiming billions of images costs nothing: gzip input is
//! decompressed at most up to what the header implies, plus one byte to detect trailing data,
//! into a buffer that grows only with the data that really arrives.

use crate::data_spec::MAX_FEATURES;
use crate::error::{Error, Result};
use flate2::read::GzDecoder;
use std::io::Read;

const IMAGE_MAGIC: u32 = 0x0000_0803;
const COLOUR_IMAGE_MAGIC: u32 = 0x0000_0804;
const LABEL_MAGIC: u32 = 0x0000_0801;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Images read from an IDX file: `count * height * width * channels` bytes, row-major per
/// image, channels last.
#[derive(Clone, Debug, PartialEq)]
pub struct Images {
    /// `[height, width, channels]`.
    pub shape: [usize; 3],
    pub pixels: Vec<u8>,
}

/// Parses an IDX image file (grey `[n, h, w]` or colour `[n, h, w, c]`, u8); `name` is used in
/// errors (a path, usually).
pub fn parse_images(name: &str, bytes: &[u8]) -> Result<Images> {
    let colour = magic_of(bytes) == Some(COLOUR_IMAGE_MAGIC);
    let (magic, ndim) = if colour {
        (COLOUR_IMAGE_MAGIC, 4)
    } else {
        (IMAGE_MAGIC, 3)
    };
    let (dims, pixels) = parse(name, bytes, magic, ndim, "image")?;
    let d = |i: usize| dims.get(i).map_or(1, |&d| d as usize);
    Ok(Images {
        shape: [d(1), d(2), d(3)],
        pixels,
    })
}

/// Parses an IDX1 label file (u8 labels; the classes are what the labels name).
pub fn parse_labels(name: &str, bytes: &[u8]) -> Result<Vec<u8>> {
    Ok(parse(name, bytes, LABEL_MAGIC, 1, "label")?.1)
}

/// The magic number of raw IDX bytes or of a gzip stream's first bytes, if there are four.
fn magic_of(bytes: &[u8]) -> Option<u32> {
    let mut head = [0u8; 4];
    if bytes.starts_with(&GZIP_MAGIC) {
        GzDecoder::new(bytes).read_exact(&mut head).ok()?;
    } else {
        head.copy_from_slice(bytes.get(..4)?);
    }
    Some(u32::from_be_bytes(head))
}

/// Reads header and data, checking magic, rank and that the data length matches the header exactly.
fn parse(
    name: &str,
    bytes: &[u8],
    magic: u32,
    ndim: usize,
    kind: &str,
) -> Result<(Vec<u32>, Vec<u8>)> {
    let header_len = 4 + 4 * ndim;
    if bytes.starts_with(&GZIP_MAGIC) {
        let mut gz = GzDecoder::new(bytes);
        let mut header = vec![0u8; header_len];
        gz.read_exact(&mut header)
            .map_err(|e| gz_error(name, e, "header"))?;
        check_magic(name, &header, magic, kind)?;
        let (dims, expected) = check_header(name, &header, ndim, kind)?;
        // Grow with the data that arrives, never from the header's claim alone.
        let mut data = Vec::with_capacity(expected.min(1 << 24));
        (&mut gz)
            .take(expected as u64 + 1)
            .read_to_end(&mut data)
            .map_err(|e| gz_error(name, e, "data"))?;
        check_length(name, data.len(), expected, &dims, kind)?;
        Ok((dims, data))
    } else {
        check_magic(name, bytes, magic, kind)?;
        if bytes.len() < header_len {
            return Err(Error::data(
                name,
                format!(
                    "truncated: {} bytes, shorter than the {header_len}-byte IDX header",
                    bytes.len()
                ),
            ));
        }
        let (dims, expected) = check_header(name, &bytes[..header_len], ndim, kind)?;
        let data = &bytes[header_len..];
        check_length(name, data.len(), expected, &dims, kind)?;
        Ok((dims, data.to_vec()))
    }
}

fn check_magic(name: &str, bytes: &[u8], magic: u32, kind: &str) -> Result<()> {
    let found = match bytes.get(..4) {
        Some(b) => u32::from_be_bytes(b.try_into().unwrap()),
        None => {
            return Err(Error::data(
                name,
                format!(
                    "truncated: {} bytes, too short for an IDX file",
                    bytes.len()
                ),
            ))
        }
    };
    if found == magic {
        return Ok(());
    }
    let what = match found {
        IMAGE_MAGIC | COLOUR_IMAGE_MAGIC => " (an image file)",
        LABEL_MAGIC => " (a label file)",
        _ => "",
    };
    Err(Error::data(
        name,
        format!("not an IDX {kind} file: magic 0x{found:08x}{what}, expected 0x{magic:08x}"),
    ))
}

/// Reads the dimensions (an image's must make 1 to `MAX_FEATURES` pixels) and the data length
/// they imply.
fn check_header(name: &str, header: &[u8], ndim: usize, kind: &str) -> Result<(Vec<u32>, usize)> {
    let word = |i: usize| u32::from_be_bytes(header[4 * i..4 * i + 4].try_into().unwrap());
    let dims: Vec<u32> = (1..=ndim).map(word).collect();
    // Checked: three u32 dimensions of a colour image can overflow even u64 (found by fuzzing).
    let per_image = dims[1..]
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .unwrap_or(u64::MAX);
    if ndim > 1 && !(1..=MAX_FEATURES as u64).contains(&per_image) {
        let shape: Vec<String> = dims[1..].iter().map(u32::to_string).collect();
        return Err(Error::data(
            name,
            format!(
                "{kind}s of {} make {per_image} pixels; gpumlp takes 1 to {MAX_FEATURES}",
                shape.join("x")
            ),
        ));
    }
    // Checked: three u32 factors can overflow even u64; anything past 4 GiB is refused anyway.
    let expected = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
    match expected {
        Some(n) if n <= u32::MAX as u64 => Ok((dims, n as usize)),
        _ => Err(Error::data(
            name,
            format!("header claims {} {kind}s ({dims:?}), more than the 4 GiB an IDX file may hold here", dims[0]),
        )),
    }
}

fn check_length(name: &str, got: usize, expected: usize, dims: &[u32], kind: &str) -> Result<()> {
    if got < expected {
        Err(Error::data(
            name,
            format!(
                "truncated: header claims {} {kind}s ({expected} data bytes) but the file holds {got}",
                dims[0]
            ),
        ))
    } else if got > expected {
        Err(Error::data(
            name,
            format!(
                "{} bytes of trailing data after the {} {kind}s the header claims",
                got - expected,
                dims[0]
            ),
        ))
    } else {
        Ok(())
    }
}

fn gz_error(name: &str, e: std::io::Error, part: &str) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Error::data(
            name,
            format!("truncated: the gzip stream ends inside the IDX {part}"),
        )
    } else {
        Error::data(name, format!("corrupt gzip data: {e}"))
    }
}

/// Encodes 28x28 grey images (`count * 784` bytes) as a raw IDX3 file: the tests and tools
/// use it.
pub fn encode_images(pixels: &[u8]) -> Vec<u8> {
    encode_images_of([28, 28, 1], pixels)
}

/// Encodes images of `[height, width, channels]` as a raw IDX file (IDX3 for one channel).
pub fn encode_images_of(shape: [usize; 3], pixels: &[u8]) -> Vec<u8> {
    let count = (pixels.len() / shape.iter().product::<usize>()) as u32;
    let mut out = Vec::with_capacity(20 + pixels.len());
    let [h, w, c] = shape.map(|d| d as u32);
    let header: &[u32] = if c == 1 {
        &[IMAGE_MAGIC, count, h, w]
    } else {
        &[COLOUR_IMAGE_MAGIC, count, h, w, c]
    };
    for w in header {
        out.extend_from_slice(&w.to_be_bytes());
    }
    out.extend_from_slice(pixels);
    out
}

/// Encodes labels as a raw IDX1 file.
pub fn encode_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + labels.len());
    out.extend_from_slice(&LABEL_MAGIC.to_be_bytes());
    out.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    out.extend_from_slice(labels);
    out
}
