//! CSV ⇄ JSON over the csv crate (RFC 4180 quoting, any delimiter and quote).
//!
//! Parsing gives an array of objects keyed by the header row (or by `columns`
//! when the file has none), or an array of arrays when there is no header;
//! every value is a string, as written. Formatting takes either shape back;
//! numbers and booleans are written as text, null as an empty field, nested
//! values as JSON text.
//!
//! Invariant: rows with a different number of fields are an error naming the
//! line, unless `flexible` is set (then missing fields are left out and extra
//! ones are keyed by their 1-based position). A header row that names two
//! columns alike is an error too: one of them would be lost.

use serde_json::{Map, Value};

/// How the CSV text is laid out.
#[derive(Debug, Clone)]
pub struct CsvOptions {
    pub delimiter: u8,
    pub quote: u8,
    /// The first row names the columns.
    pub header: bool,
    /// Column names to use instead of (or in the absence of) a header row.
    pub columns: Option<Vec<String>>,
    pub flexible: bool,
    /// Line terminator when writing: CRLF (RFC 4180) or LF.
    pub crlf: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: b',',
            quote: b'"',
            header: true,
            columns: None,
            flexible: false,
            crlf: false,
        }
    }
}

/// A CSV text or JSON value that cannot be converted.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("line {line}: {message}")]
    Read { line: u64, message: String },
    #[error("{0}")]
    Shape(String),
    #[error("cannot write CSV: {0}")]
    Write(String),
}

fn read_error(e: csv::Error) -> CsvError {
    let line = e.position().map(|p| p.line()).unwrap_or(0);
    let message = match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!(
            "{len} fields, expected {expected_len} (set `flexible: true` to accept ragged rows)"
        ),
        csv::ErrorKind::Utf8 { err, .. } => format!(
            "field {} is not valid UTF-8; decode the body with a `charset` step first",
            err.field() + 1
        ),
        _ => e.to_string(),
    };
    CsvError::Read { line, message }
}

/// CSV text → JSON (see the module docs for the shape).
pub fn parse(bytes: &[u8], o: &CsvOptions) -> Result<Value, CsvError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(o.delimiter)
        .quote(o.quote)
        .has_headers(o.header && o.columns.is_none())
        .flexible(o.flexible)
        .from_reader(bytes);
    let names: Option<Vec<String>> = match &o.columns {
        Some(c) => {
            if o.header {
                // The file's own header row is skipped in favour of `columns`.
                let mut first = csv::StringRecord::new();
                reader.read_record(&mut first).map_err(read_error)?;
            }
            Some(c.clone())
        }
        None if o.header => {
            let header = reader.headers().map_err(read_error)?;
            let names: Vec<String> = header.iter().map(str::to_string).collect();
            // Two columns with one name would become one key: the first
            // column's values would be lost without a word.
            for (i, n) in names.iter().enumerate() {
                if let Some(j) = names[..i].iter().position(|m| m == n) {
                    return Err(CsvError::Read {
                        line: header.position().map(|p| p.line()).unwrap_or(1),
                        message: format!(
                            "columns {} and {} are both named `{n}`; name them with `columns:` or set `header: false`",
                            j + 1,
                            i + 1
                        ),
                    });
                }
            }
            Some(names)
        }
        None => None,
    };
    let mut rows = Vec::new();
    for rec in reader.records() {
        let rec = rec.map_err(read_error)?;
        if let Some(names) = &names {
            if !o.flexible && rec.len() != names.len() {
                return Err(CsvError::Read {
                    line: rec.position().map(|p| p.line()).unwrap_or(0),
                    message: format!(
                        "{} fields, expected {} (set `flexible: true` to accept ragged rows)",
                        rec.len(),
                        names.len()
                    ),
                });
            }
            let mut obj = Map::new();
            for (i, v) in rec.iter().enumerate() {
                let key = names.get(i).cloned().unwrap_or_else(|| (i + 1).to_string());
                obj.insert(key, Value::String(v.to_string()));
            }
            rows.push(Value::Object(obj));
        } else {
            rows.push(Value::Array(
                rec.iter().map(|v| Value::String(v.to_string())).collect(),
            ));
        }
    }
    Ok(Value::Array(rows))
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// JSON (array of objects or of arrays) → CSV text.
pub fn format(v: &Value, o: &CsvOptions) -> Result<String, CsvError> {
    let rows = v
        .as_array()
        .ok_or_else(|| CsvError::Shape("expected a JSON array of rows".into()))?;
    let mut w = csv::WriterBuilder::new()
        .delimiter(o.delimiter)
        .quote(o.quote)
        .flexible(o.flexible)
        .terminator(if o.crlf {
            csv::Terminator::CRLF
        } else {
            csv::Terminator::Any(b'\n')
        })
        .from_writer(Vec::new());
    let wr = |e: csv::Error| CsvError::Write(e.to_string());
    let objects = rows.iter().any(Value::is_object);
    if objects {
        let names: Vec<String> = match &o.columns {
            Some(c) => c.clone(),
            None => {
                let mut names: Vec<String> = Vec::new();
                for r in rows {
                    for k in r.as_object().into_iter().flat_map(|m| m.keys()) {
                        if !names.contains(k) {
                            names.push(k.clone());
                        }
                    }
                }
                names
            }
        };
        if o.header {
            w.write_record(&names).map_err(wr)?;
        }
        for (i, r) in rows.iter().enumerate() {
            let obj = r.as_object().ok_or_else(|| {
                CsvError::Shape(format!("row {i} is not an object like the others"))
            })?;
            w.write_record(
                names
                    .iter()
                    .map(|n| cell(obj.get(n).unwrap_or(&Value::Null))),
            )
            .map_err(wr)?;
        }
    } else {
        if let (true, Some(c)) = (o.header, &o.columns) {
            w.write_record(c).map_err(wr)?;
        }
        for (i, r) in rows.iter().enumerate() {
            let cells = r
                .as_array()
                .ok_or_else(|| CsvError::Shape(format!("row {i} is not an array or object")))?;
            w.write_record(cells.iter().map(cell)).map_err(wr)?;
        }
    }
    let bytes = w.into_inner().map_err(|e| CsvError::Write(e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| CsvError::Write(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_by_header_and_back() {
        let text = "a,b\n1,\"x, \"\"y\"\"\"\n2,\n";
        let v = parse(text.as_bytes(), &CsvOptions::default()).unwrap();
        assert_eq!(v, json!([{"a": "1", "b": "x, \"y\""}, {"a": "2", "b": ""}]));
        assert_eq!(format(&v, &CsvOptions::default()).unwrap(), text);
    }

    #[test]
    fn arrays_without_header_and_other_delimiters() {
        let o = CsvOptions {
            delimiter: b';',
            header: false,
            ..CsvOptions::default()
        };
        let v = parse(b"1;2\n3;4\n", &o).unwrap();
        assert_eq!(v, json!([["1", "2"], ["3", "4"]]));
        assert_eq!(format(&v, &o).unwrap(), "1;2\n3;4\n");
        let named = CsvOptions {
            columns: Some(vec!["x".into(), "y".into()]),
            header: false,
            ..CsvOptions::default()
        };
        assert_eq!(
            parse(b"1,2\n", &named).unwrap(),
            json!([{"x": "1", "y": "2"}])
        );
    }

    #[test]
    fn ragged_rows_fail_with_a_line_unless_flexible() {
        let err = parse(b"a,b\n1,2\n3\n", &CsvOptions::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 3: 1 fields, expected 2 (set `flexible: true` to accept ragged rows)"
        );
        let o = CsvOptions {
            flexible: true,
            ..CsvOptions::default()
        };
        assert_eq!(
            parse(b"a,b\n3\n4,5,6\n", &o).unwrap(),
            json!([{"a": "3"}, {"a": "4", "b": "5", "3": "6"}])
        );
    }

    #[test]
    fn duplicate_column_names_are_an_error_not_a_lost_column() {
        let err = parse(b"a,,\n1,2,3\n", &CsvOptions::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 1: columns 2 and 3 are both named ``; name them with `columns:` or set `header: false`"
        );
        let named = CsvOptions {
            columns: Some(vec!["a".into(), "b".into(), "c".into()]),
            ..CsvOptions::default()
        };
        assert_eq!(
            parse(b"a,,\n1,2,3\n", &named).unwrap(),
            json!([{"a": "1", "b": "2", "c": "3"}])
        );
    }

    #[test]
    fn values_of_any_type_are_written_as_text() {
        let v = json!([{"n": 1.5, "b": true, "z": null, "o": {"k": 1}}]);
        assert_eq!(
            format(&v, &CsvOptions::default()).unwrap(),
            "n,b,z,o\n1.5,true,,\"{\"\"k\"\":1}\"\n"
        );
    }
}
