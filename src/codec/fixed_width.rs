//! Fixed-width records ⇄ JSON, from a layout declared in the route.
//!
//! A layout is one record type (`fields`) or several (`records`), each chosen
//! by a discriminator (`when: { start: 1, equals: "6" }`: the text at those
//! columns). Fields have a name, a start column (1-based; default: right
//! after the previous field), a length, and a type: `string`, `int`,
//! `decimal` (with `scale` implied decimal places) or `date` (with a chrono
//! `format`). Parsing gives an array of objects (with `"_type"` when there
//! are several record types); formatting takes the same array back.
//!
//! Invariants: columns count characters, not bytes (decode EBCDIC or Latin-1
//! with a `charset` step first); every error names the line (parsing) or the
//! record index (formatting) and the field, and no input can make this panic.

use chrono::NaiveDate;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Number, Value};

/// The key that names the record type in multi-type output and input.
pub const TYPE_KEY: &str = "_type";

/// One field of a record.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// Key in the JSON object.
    pub name: String,
    /// First column, 1-based (default: right after the previous field; the
    /// first field starts at column 1).
    pub start: Option<usize>,
    /// Width in characters.
    pub length: usize,
    /// `string` (default), `int`, `decimal` or `date`.
    #[serde(default, rename = "type")]
    pub kind: FieldType,
    /// `decimal`: implied decimal places; with 2, `0001234` is 12.34. A value
    /// written with its own decimal point is read as it is.
    #[serde(default)]
    pub scale: u32,
    /// `date`: chrono format of the text (default `%Y%m%d`). JSON holds the
    /// date as `YYYY-MM-DD`; blank or all-zero dates are null.
    pub format: Option<String>,
    /// Where the value sits when it is shorter than the field: `left` (default
    /// for strings) or `right` (default for numbers).
    pub align: Option<Align>,
    /// Padding character (default space for strings and dates, `0` for numbers).
    pub pad: Option<char>,
    /// Strings: remove padding and surrounding spaces when parsing (default:
    /// the step's `trim`, which defaults to true). Without trimming, parsing
    /// then formatting gives every record back byte for byte.
    pub trim: Option<bool>,
}

/// Type of a fixed-width field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    #[default]
    String,
    Int,
    Decimal,
    Date,
}

/// Justification of a value inside its field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Align {
    Left,
    Right,
}

/// One record type of a multi-type layout.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordSpec {
    /// Name of the type, written as `"_type"` in the JSON.
    #[serde(rename = "type")]
    pub name: String,
    /// Which lines are of this type (first matching type wins; a type without
    /// `when` matches every line, so put it last).
    pub when: Option<When>,
    /// Recognise these lines but leave them out of the JSON (e.g. ACH `9999…`
    /// block padding).
    #[serde(default)]
    pub skip: bool,
    /// The fields of this record type.
    #[serde(default)]
    pub fields: Vec<FieldSpec>,
}

/// A discriminator: the text at `start` (1-based) equals `equals`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// First column, 1-based.
    pub start: usize,
    /// Expected text at that column.
    pub equals: String,
}

/// Layout problems found when the route loads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LayoutError(pub String);

/// A value or line that does not fit the layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("line {line}: {len} characters, expected {expected}")]
    Length {
        line: usize,
        len: usize,
        expected: usize,
    },
    #[error("line {line}: no record type matches `{start}`")]
    NoType { line: usize, start: String },
    #[error("line {line}, field `{field}` (columns {from}-{to}): {problem}")]
    Field {
        line: usize,
        field: String,
        from: usize,
        to: usize,
        problem: String,
    },
    #[error("record {index}: {problem}")]
    Format { index: usize, problem: String },
}

#[derive(Debug, Clone)]
struct Field {
    spec: FieldSpec,
    /// 0-based first column.
    start: usize,
    align: Align,
    pad: char,
    format: String,
    trim: bool,
}

impl Field {
    fn end(&self) -> usize {
        self.start + self.spec.length
    }
}

#[derive(Debug, Clone)]
struct Record {
    name: Option<String>,
    when: Option<(usize, Vec<char>)>,
    skip: bool,
    fields: Vec<Field>,
    width: usize,
}

/// A checked layout, ready to parse and format.
#[derive(Debug, Clone)]
pub struct Layout {
    records: Vec<Record>,
    record_length: Option<usize>,
    allow_short: bool,
}

impl Layout {
    /// Check a layout: either `fields` or `records`, sane columns, known
    /// date formats, names unique within a record.
    pub fn new(
        fields: &[FieldSpec],
        records: &[RecordSpec],
        record_length: Option<usize>,
        allow_short: bool,
        trim: bool,
    ) -> Result<Layout, LayoutError> {
        let specs: Vec<RecordSpec> = match (fields.is_empty(), records.is_empty()) {
            (false, true) => vec![RecordSpec {
                name: String::new(),
                when: None,
                skip: false,
                fields: fields.to_vec(),
            }],
            (true, false) => records.to_vec(),
            _ => {
                return Err(LayoutError(
                    "give either `fields` (one record type) or `records` (several)".into(),
                ));
            }
        };
        let multi = !records.is_empty();
        let mut out = Vec::new();
        for r in &specs {
            let what = if multi {
                format!("record type `{}`", r.name)
            } else {
                "layout".to_string()
            };
            if multi && r.name.trim().is_empty() {
                return Err(LayoutError("every record type needs a `type` name".into()));
            }
            if !r.skip && r.fields.is_empty() {
                return Err(LayoutError(format!("{what} has no fields")));
            }
            let mut next = 0;
            let mut built = Vec::new();
            for f in &r.fields {
                if f.length == 0 {
                    return Err(LayoutError(format!(
                        "{what}: field `{}` has length 0",
                        f.name
                    )));
                }
                let start = match f.start {
                    Some(0) => {
                        return Err(LayoutError(format!(
                            "{what}: field `{}`: columns start at 1",
                            f.name
                        )));
                    }
                    Some(s) => s - 1,
                    None => next,
                };
                if built.iter().any(|b: &Field| b.spec.name == f.name) || f.name == TYPE_KEY {
                    return Err(LayoutError(format!(
                        "{what}: field name `{}` is used twice or reserved",
                        f.name
                    )));
                }
                let numeric = matches!(f.kind, FieldType::Int | FieldType::Decimal);
                let format = f.format.clone().unwrap_or_else(|| "%Y%m%d".into());
                if f.kind == FieldType::Date {
                    check_date_format(&format)
                        .map_err(|e| LayoutError(format!("{what}: field `{}`: {e}", f.name)))?;
                }
                let field = Field {
                    spec: f.clone(),
                    start,
                    align: f
                        .align
                        .unwrap_or(if numeric { Align::Right } else { Align::Left }),
                    pad: f.pad.unwrap_or(if numeric { '0' } else { ' ' }),
                    format,
                    trim: f.trim.unwrap_or(trim),
                };
                next = field.end();
                if let Some(len) = record_length
                    && field.end() > len
                {
                    return Err(LayoutError(format!(
                        "{what}: field `{}` ends at column {}, past record_length {len}",
                        f.name,
                        field.end()
                    )));
                }
                built.push(field);
            }
            let width = built.iter().map(Field::end).max().unwrap_or(0);
            let when = match &r.when {
                Some(w) if w.start == 0 || w.equals.is_empty() => {
                    return Err(LayoutError(format!(
                        "{what}: `when` needs start ≥ 1 and a non-empty `equals`"
                    )));
                }
                Some(w) => Some((w.start - 1, w.equals.chars().collect())),
                None => None,
            };
            out.push(Record {
                name: multi.then(|| r.name.clone()),
                when,
                skip: r.skip,
                fields: built,
                width,
            });
        }
        Ok(Layout {
            records: out,
            record_length,
            allow_short,
        })
    }

    fn multi(&self) -> bool {
        self.records.first().is_some_and(|r| r.name.is_some())
    }

    /// Parse text (one record per line, LF or CRLF; blank lines skipped), or
    /// back-to-back records of `record_length` when `unbroken` is set.
    pub fn parse(&self, text: &str, unbroken: bool) -> Result<Value, RecordError> {
        let mut out = Vec::new();
        let lines: Box<dyn Iterator<Item = (usize, String)>> = match (unbroken, self.record_length)
        {
            (true, Some(n)) => {
                let chars: Vec<char> = text.chars().collect();
                Box::new(
                    chars
                        .chunks(n)
                        .map(|c| c.iter().collect::<String>())
                        .enumerate()
                        .map(|(i, s)| (i + 1, s))
                        .collect::<Vec<_>>()
                        .into_iter(),
                )
            }
            _ => Box::new(
                text.split('\n')
                    .enumerate()
                    .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l).to_string())),
            ),
        };
        for (line_no, line) in lines {
            if line.is_empty() {
                continue;
            }
            let chars: Vec<char> = line.chars().collect();
            if let Some(expected) = self.record_length
                && chars.len() != expected
                && !(self.allow_short && chars.len() < expected)
            {
                return Err(RecordError::Length {
                    line: line_no,
                    len: chars.len(),
                    expected,
                });
            }
            let record = self
                .records
                .iter()
                .find(|r| match &r.when {
                    None => true,
                    Some((start, equals)) => {
                        chars.get(*start..*start + equals.len()) == Some(equals)
                    }
                })
                .ok_or_else(|| RecordError::NoType {
                    line: line_no,
                    start: chars.iter().take(10).collect(),
                })?;
            if record.skip {
                continue;
            }
            let mut obj = Map::new();
            if let Some(name) = &record.name {
                obj.insert(TYPE_KEY.into(), Value::String(name.clone()));
            }
            for f in &record.fields {
                let err = |problem: String| RecordError::Field {
                    line: line_no,
                    field: f.spec.name.clone(),
                    from: f.start + 1,
                    to: f.end(),
                    problem,
                };
                let slice: String = if f.end() <= chars.len() {
                    chars[f.start..f.end()].iter().collect()
                } else if self.allow_short {
                    chars.iter().skip(f.start).collect()
                } else {
                    return Err(err(format!("the line has only {} characters", chars.len())));
                };
                obj.insert(f.spec.name.clone(), parse_value(f, &slice).map_err(err)?);
            }
            out.push(Value::Object(obj));
        }
        Ok(Value::Array(out))
    }

    /// Format an array of objects (or one object) into records, each followed
    /// by `line_end`.
    pub fn format(&self, value: &Value, line_end: &str) -> Result<String, RecordError> {
        let items: Vec<&Value> = match value {
            Value::Array(a) => a.iter().collect(),
            Value::Object(_) => vec![value],
            _ => {
                return Err(RecordError::Format {
                    index: 0,
                    problem: "expected an array of objects".into(),
                });
            }
        };
        let mut out = String::new();
        for (index, item) in items.into_iter().enumerate() {
            let ferr = |problem: String| RecordError::Format { index, problem };
            let obj = item
                .as_object()
                .ok_or_else(|| ferr("is not an object".into()))?;
            let record = if self.multi() {
                let names = || {
                    self.records
                        .iter()
                        .filter(|r| !r.skip)
                        .filter_map(|r| r.name.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let name = obj
                    .get(TYPE_KEY)
                    .and_then(Value::as_str)
                    .ok_or_else(|| ferr(format!("has no `{TYPE_KEY}` (one of: {})", names())))?;
                self.records
                    .iter()
                    .find(|r| r.name.as_deref() == Some(name) && !r.skip)
                    .ok_or_else(|| {
                        ferr(format!(
                            "unknown `{TYPE_KEY}` `{name}` (one of: {})",
                            names()
                        ))
                    })?
            } else {
                &self.records[0]
            };
            let width = self.record_length.unwrap_or(record.width);
            let mut line: Vec<char> = vec![' '; width];
            if let Some((start, equals)) = &record.when {
                for (i, c) in equals.iter().enumerate() {
                    if let Some(slot) = line.get_mut(start + i) {
                        *slot = *c;
                    }
                }
            }
            for f in &record.fields {
                let text = format_value(f, obj.get(&f.spec.name).unwrap_or(&Value::Null))
                    .map_err(|p| ferr(format!("field `{}`: {p}", f.spec.name)))?;
                for (i, c) in text.chars().enumerate() {
                    if let Some(slot) = line.get_mut(f.start + i) {
                        *slot = c;
                    }
                }
            }
            out.extend(line);
            out.push_str(line_end);
        }
        Ok(out)
    }
}

fn check_date_format(format: &str) -> Result<(), String> {
    use chrono::format::{Item, StrftimeItems};
    if StrftimeItems::new(format).any(|i| matches!(i, Item::Error)) {
        return Err(format!("invalid date format `{format}`"));
    }
    Ok(())
}

fn strip_padding(f: &Field, raw: &str) -> String {
    if !f.trim {
        return raw.to_string();
    }
    let s = match f.align {
        Align::Left => raw.trim_end_matches(f.pad),
        Align::Right => raw.trim_start_matches(f.pad),
    };
    // Only spaces: other whitespace (NEL, NBSP, control bytes) is data in
    // legacy records.
    s.trim_matches(' ').to_string()
}

fn parse_value(f: &Field, raw: &str) -> Result<Value, String> {
    match f.spec.kind {
        FieldType::String => Ok(Value::String(strip_padding(f, raw))),
        FieldType::Int | FieldType::Decimal => {
            let t = raw.trim();
            let t = t.trim_start_matches(|c| c == f.pad && c != '-' && c != '+');
            let t =
                if t.is_empty() && raw.trim().chars().all(|c| c == '0') && !raw.trim().is_empty() {
                    "0"
                } else {
                    t
                };
            if t.is_empty() {
                return Ok(Value::Null);
            }
            if f.spec.kind == FieldType::Int {
                return t
                    .parse::<i64>()
                    .map(|n| Value::Number(n.into()))
                    .map_err(|_| format!("`{raw}` is not an integer"));
            }
            parse_decimal(t, f.spec.scale).ok_or_else(|| format!("`{raw}` is not a number"))
        }
        FieldType::Date => {
            let t = raw.trim();
            if t.is_empty() || t.chars().all(|c| c == '0') {
                return Ok(Value::Null);
            }
            NaiveDate::parse_from_str(t, &f.format)
                .map(|d| Value::String(d.format("%Y-%m-%d").to_string()))
                .map_err(|e| format!("`{raw}` is not a date in format `{}`: {e}", f.format))
        }
    }
}

fn parse_decimal(t: &str, scale: u32) -> Option<Value> {
    let (sign, digits) = match t.as_bytes().first() {
        Some(b'-') => ("-", &t[1..]),
        Some(b'+') => ("", &t[1..]),
        _ => ("", t),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let text = if digits.contains('.') || scale == 0 {
        format!("{sign}{digits}")
    } else {
        let scale = scale as usize;
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (int, frac) = padded.split_at(padded.len() - scale);
        format!("{sign}{int}.{frac}")
    };
    let n: f64 = text.parse().ok()?;
    Number::from_f64(n).map(Value::Number)
}

fn format_value(f: &Field, v: &Value) -> Result<String, String> {
    let len = f.spec.length;
    let body = match (f.spec.kind, v) {
        (_, Value::Null) => String::new(),
        (FieldType::String, Value::String(s)) => s.clone(),
        (FieldType::String, Value::Number(_) | Value::Bool(_)) => v.to_string(),
        (FieldType::Int | FieldType::Decimal, _) => {
            let n = match v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            }
            .ok_or_else(|| format!("{v} is not a number"))?;
            let scaled = if f.spec.kind == FieldType::Decimal {
                n * 10f64.powi(f.spec.scale as i32)
            } else {
                n
            };
            let rounded = scaled.round();
            if f.spec.kind == FieldType::Int && rounded != n {
                return Err(format!("{v} is not an integer"));
            }
            if !(-9.0e15..=9.0e15).contains(&rounded) {
                return Err(format!("{v} is out of range"));
            }
            let int = rounded as i64;
            let digits = int.unsigned_abs().to_string();
            if int < 0 && f.pad == '0' {
                if digits.len() + 1 > len {
                    return Err(format!("{v} does not fit in {len} characters"));
                }
                return Ok(format!("-{digits:0>w$}", w = len - 1));
            }
            if int < 0 {
                format!("-{digits}")
            } else {
                digits
            }
        }
        (FieldType::Date, Value::String(s)) => {
            let d = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
                .map_err(|_| format!("`{s}` is not a date (YYYY-MM-DD)"))?;
            d.format(&f.format).to_string()
        }
        (_, other) => {
            return Err(format!(
                "cannot write {other} into a {:?} field",
                f.spec.kind
            ));
        }
    };
    let n = body.chars().count();
    if n > len {
        return Err(format!("`{body}` is {n} characters, the field holds {len}"));
    }
    let fill: String = std::iter::repeat_n(f.pad, len - n).collect();
    Ok(match f.align {
        Align::Left => format!("{body}{fill}"),
        Align::Right => format!("{fill}{body}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(name: &str, length: usize, kind: FieldType) -> FieldSpec {
        FieldSpec {
            name: name.into(),
            start: None,
            length,
            kind,
            scale: 0,
            format: None,
            align: None,
            pad: None,
            trim: None,
        }
    }

    fn people() -> Layout {
        let mut amount = field("amount", 8, FieldType::Decimal);
        amount.scale = 2;
        let mut born = field("born", 6, FieldType::Date);
        born.format = Some("%y%m%d".into());
        Layout::new(
            &[
                field("name", 10, FieldType::String),
                field("age", 3, FieldType::Int),
                amount,
                born,
            ],
            &[],
            Some(27),
            false,
            true,
        )
        .unwrap()
    }

    #[test]
    fn parses_typed_fields_and_formats_them_back() {
        let text = "Ada       03600012345851210\nBob       007-0000050      \n";
        let v = people().parse(text, false).unwrap();
        assert_eq!(
            v,
            json!([
                {"name": "Ada", "age": 36, "amount": 123.45, "born": "1985-12-10"},
                {"name": "Bob", "age": 7, "amount": -0.5, "born": null}
            ])
        );
        assert_eq!(people().format(&v, "\n").unwrap(), text);
    }

    #[test]
    fn wrong_lengths_and_bad_values_name_the_line_and_field() {
        let err = people()
            .parse("Ada       03600012345851210\nshort\n", false)
            .unwrap_err();
        assert_eq!(err.to_string(), "line 2: 5 characters, expected 27");
        let err = people()
            .parse("Ada       0x600012345851210", false)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 1, field `age` (columns 11-13): `0x6` is not an integer"
        );
        let err = people()
            .format(&json!([{"name": "A very long name"}]), "\n")
            .unwrap_err();
        assert!(
            err.to_string().starts_with("record 0: field `name`"),
            "{err}"
        );
    }

    #[test]
    fn record_types_are_chosen_by_discriminator() {
        let mut rt = field("kind", 1, FieldType::String);
        rt.start = Some(1);
        let records = vec![
            RecordSpec {
                name: "padding".into(),
                when: Some(When {
                    start: 1,
                    equals: "9999".into(),
                }),
                skip: true,
                fields: vec![],
            },
            RecordSpec {
                name: "header".into(),
                when: Some(When {
                    start: 1,
                    equals: "H".into(),
                }),
                skip: false,
                fields: vec![rt.clone(), field("date", 8, FieldType::Date)],
            },
            RecordSpec {
                name: "detail".into(),
                when: Some(When {
                    start: 1,
                    equals: "D".into(),
                }),
                skip: false,
                fields: vec![rt, field("qty", 4, FieldType::Int)],
            },
        ];
        let layout = Layout::new(&[], &records, Some(9), false, true).unwrap();
        let text = "H20240131\nD0042    \n999999999\n";
        let v = layout.parse(text, false).unwrap();
        assert_eq!(
            v,
            json!([
                {"_type": "header", "kind": "H", "date": "2024-01-31"},
                {"_type": "detail", "kind": "D", "qty": 42}
            ])
        );
        assert_eq!(layout.format(&v, "\n").unwrap(), "H20240131\nD0042    \n");
        let err = layout.parse("X12345678\n", false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 1: no record type matches `X12345678`"
        );
        assert!(layout.format(&json!([{"qty": 1}]), "\n").is_err());
        // Back-to-back records (no line breaks), as mainframes send them.
        assert_eq!(
            layout.parse("H20240131D0042    ", true).unwrap(),
            json!([v[0], v[1]])
        );
    }

    #[test]
    fn layout_mistakes_are_load_errors() {
        assert!(Layout::new(&[], &[], None, false, true).is_err());
        assert!(Layout::new(&[field("a", 0, FieldType::String)], &[], None, false, true).is_err());
        assert!(
            Layout::new(
                &[field("a", 5, FieldType::String)],
                &[],
                Some(4),
                false,
                true
            )
            .is_err()
        );
        let mut d = field("d", 8, FieldType::Date);
        d.format = Some("%Q".into());
        assert!(Layout::new(&[d], &[], None, false, true).is_err());
    }

    #[test]
    fn short_lines_can_be_allowed() {
        let layout = Layout::new(
            &[
                field("a", 2, FieldType::String),
                field("b", 4, FieldType::String),
            ],
            &[],
            Some(6),
            true,
            true,
        )
        .unwrap();
        assert_eq!(
            layout.parse("xyz\n", false).unwrap(),
            json!([{"a": "xy", "b": "z"}])
        );
    }
}
