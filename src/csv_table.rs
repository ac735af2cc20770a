//! CSV tables as data, read through the `csv` crate: one sample per row, numeric features, and
//! a label column (named by `label`, else the last) holding class numbers or class names.
//!
//! The first row is a header when a label column is named, or when any of its feature cells is
//! not a number. Names are given classes in sorted order (or the model's order, when reading
//! data for a model that has names). Every cell is checked: a row of another width, an empty
//! or non-numeric feature, NaN or infinity, a label that is not a class: each is an error
//! naming the line and the column.

use crate::data_spec::MAX_CLASSES;
use crate::dataset::{Dataset, Features};
use crate::error::{Error, Result};
use std::collections::BTreeSet;

/// A table read for training or evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub data: Dataset,
    /// The classes' names where the labels were names.
    pub names: Option<Vec<String>>,
    /// The header, where there was one.
    pub header: Option<Vec<String>>,
}

/// Reads a labelled table. `label` names the label column (None: the last); `names`, a model's
/// class names, maps labels to classes (None: numbers are classes, names are sorted).
pub fn read(
    name: &str,
    bytes: &[u8],
    label: Option<&str>,
    names: Option<&[String]>,
) -> Result<Table> {
    let rows = records(name, bytes)?;
    let (header, body) = split_header(name, &rows, label)?;
    let width = rows.first().map_or(0, |r| r.cells.len());
    if width < 2 {
        return Err(Error::data(
            name,
            "a table needs a label column and at least one feature column",
        ));
    }
    let label_at = match (label, &header) {
        (Some(l), Some(h)) => h.iter().position(|c| c == l).ok_or_else(|| {
            Error::data(
                name,
                format!("no column named {l} in the header ({})", h.join(", ")),
            )
        })?,
        _ => width - 1,
    };
    let mut features = Vec::with_capacity(body.len() * (width - 1));
    let mut label_cells = Vec::with_capacity(body.len());
    for row in body {
        check_width(name, row, width)?;
        for (c, cell) in row.cells.iter().enumerate() {
            if c == label_at {
                label_cells.push(cell.as_str());
            } else {
                features.push(number(name, row.line, column(&header, c), cell)?);
            }
        }
    }
    if label_cells.is_empty() {
        return Err(Error::data(name, "the table has no rows of data"));
    }
    let (labels, names) = classes(
        name,
        &label_cells,
        &body_lines(body),
        names,
        &header,
        label_at,
    )?;
    Ok(Table {
        data: Dataset::new(name, Features::Floats(features), width - 1, labels)?,
        names,
        header,
    })
}

/// Reads the features of a table for prediction: rows of `features` cells, or of one more
/// where they still hold the label column (`label`, else the last), which is dropped.
pub fn read_features(
    name: &str,
    bytes: &[u8],
    features: usize,
    label: Option<&str>,
) -> Result<Vec<f32>> {
    let rows = records(name, bytes)?;
    // The label column is found by name where there is a header, else it is the last.
    let (header, body) = split_header(name, &rows, None)?;
    let width = rows.first().map_or(0, |r| r.cells.len());
    let skip = if width == features + 1 {
        Some(match (label, &header) {
            (Some(l), Some(h)) => h.iter().position(|c| c == l).unwrap_or(width - 1),
            _ => width - 1,
        })
    } else if width == features {
        None
    } else {
        return Err(Error::data(
            name,
            format!(
                "rows of {width} columns; the model reads {features} features (with or without the label column)"
            ),
        ));
    };
    let mut out = Vec::with_capacity(body.len() * features);
    for row in body {
        check_width(name, row, width)?;
        for (c, cell) in row.cells.iter().enumerate() {
            if Some(c) != skip {
                out.push(number(name, row.line, column(&header, c), cell)?);
            }
        }
    }
    if out.is_empty() {
        return Err(Error::data(name, "the table has no rows of data"));
    }
    Ok(out)
}

struct Row {
    /// 1-based line of the file.
    line: u64,
    cells: Vec<String>,
}

fn records(name: &str, bytes: &[u8]) -> Result<Vec<Row>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(bytes);
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e
                .position()
                .map_or(String::new(), |p| format!("line {}: ", p.line()));
            Error::data(name, format!("{line}not readable as CSV ({e})"))
        })?;
        // Blank lines are skipped by the reader; a line of empty cells is data, and wrong.
        rows.push(Row {
            line: record.position().map_or(0, |p| p.line()),
            cells: record.iter().map(str::to_string).collect(),
        });
    }
    if rows.is_empty() {
        return Err(Error::data(name, "the file is empty"));
    }
    Ok(rows)
}

/// The header (the first row, when `label` is named or one of its cells other than the last
/// is not a number) and the rows of data.
fn split_header<'a>(
    name: &str,
    rows: &'a [Row],
    label: Option<&str>,
) -> Result<(Option<Vec<String>>, &'a [Row])> {
    let first = &rows[0];
    let numeric = first.cells.iter().rev().skip(1).all(|c| parse(c).is_some());
    if label.is_some() || !numeric {
        if label.is_some() && numeric && first.cells.len() > 1 {
            return Err(Error::data(
                name,
                "--label names a column, but the first row is numbers, not a header",
            ));
        }
        Ok((Some(first.cells.clone()), &rows[1..]))
    } else {
        Ok((None, rows))
    }
}

fn body_lines(body: &[Row]) -> Vec<u64> {
    body.iter().map(|r| r.line).collect()
}

fn check_width(name: &str, row: &Row, width: usize) -> Result<()> {
    if row.cells.len() == width {
        Ok(())
    } else {
        Err(Error::data(
            name,
            format!(
                "line {}: {} columns where the first row has {width}",
                row.line,
                row.cells.len()
            ),
        ))
    }
}

fn column(header: &Option<Vec<String>>, c: usize) -> String {
    match header {
        Some(h) => format!("column {}", h[c]),
        None => format!("column {}", c + 1),
    }
}

fn parse(cell: &str) -> Option<f32> {
    cell.parse::<f32>().ok()
}

fn number(name: &str, line: u64, column: String, cell: &str) -> Result<f32> {
    match parse(cell) {
        Some(x) if x.is_finite() => Ok(x),
        Some(x) => Err(Error::data(
            name,
            format!("line {line}, {column}: {x} is not a finite number"),
        )),
        None if cell.is_empty() => Err(Error::data(
            name,
            format!("line {line}, {column}: the value is missing"),
        )),
        None => Err(Error::data(
            name,
            format!("line {line}, {column}: '{cell}' is not a number"),
        )),
    }
}

/// Classes of the label cells: through `known` names, else numbers as they are when every
/// label is one, else the distinct names sorted.
fn classes(
    name: &str,
    cells: &[&str],
    lines: &[u64],
    known: Option<&[String]>,
    header: &Option<Vec<String>>,
    label_at: usize,
) -> Result<(Vec<u32>, Option<Vec<String>>)> {
    let col = column(header, label_at);
    if let Some(known) = known {
        let labels =
            cells
                .iter()
                .zip(lines)
                .map(|(cell, line)| {
                    known
                        .iter()
                        .position(|n| n == cell)
                        .map(|c| c as u32)
                        .ok_or_else(|| {
                            Error::data(
                        name,
                        format!("line {line}, {col}: '{cell}' is not one of the model's classes"),
                    )
                        })
                })
                .collect::<Result<_>>()?;
        return Ok((labels, Some(known.to_vec())));
    }
    let numbers: Option<Vec<u32>> = cells.iter().map(|c| c.parse::<u32>().ok()).collect();
    if let Some(numbers) = numbers {
        if let Some(at) = numbers.iter().position(|&l| l as usize >= MAX_CLASSES) {
            return Err(Error::data(
                name,
                format!(
                    "line {}, {col}: label {} is past the {MAX_CLASSES} classes gpumlp takes",
                    lines[at], numbers[at]
                ),
            ));
        }
        return Ok((numbers, None));
    }
    if let Some(at) = cells.iter().position(|c| c.is_empty()) {
        return Err(Error::data(
            name,
            format!("line {}, {col}: the label is missing", lines[at]),
        ));
    }
    let distinct: BTreeSet<&str> = cells.iter().copied().collect();
    if distinct.len() > MAX_CLASSES {
        return Err(Error::data(
            name,
            format!(
                "{} class names, more than the {MAX_CLASSES} gpumlp takes",
                distinct.len()
            ),
        ));
    }
    let names: Vec<String> = distinct.into_iter().map(String::from).collect();
    let labels = cells
        .iter()
        .map(|c| {
            names
                .binary_search_by(|n| n.as_str().cmp(c))
                .expect("from the set") as u32
        })
        .collect();
    Ok((labels, Some(names)))
}
