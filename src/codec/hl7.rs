//! HL7 v2 (ER7, the pipe-and-hat encoding): parse into JSON, write back, and
//! build acknowledgements.
//!
//! JSON shape (docs/legacy.md has examples): `{"segments": [SEG, …]}` in message
//! order, repeated segments kept where they are. A segment is an object with
//! `"segment": "PID"` and one key per non-empty field, named by its HL7 number
//! (`"5"` is PID-5; for MSH, `"1"` is the field separator and `"2"` the encoding
//! characters, as in the standard). A field is a string; an object of
//! components keyed `"1"`, `"2"`, … when it has several; an array when it
//! repeats. A component with subcomponents is again an object keyed by number.
//! Values are unescaped (`\F\ \S\ \T\ \R\ \E\ \Xhh\`); formatting escapes
//! (`\H\ \N\ \.br\ \Zxx\ \Cxxyy\ \Mxxyyzz\`) are kept as written.
//!
//! Invariants: parsing is linear and never recurses, so hostile input cannot
//! hang it or overflow the stack; `to_json` output is canonical (trailing empty
//! components dropped, a lone component collapsed to a string), so JSON → HL7
//! → JSON is the identity and HL7 → JSON → HL7 only drops insignificant
//! trailing delimiters.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// The delimiters of a message, from MSH-1 and MSH-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    pub field: char,
    pub component: char,
    pub repetition: char,
    pub escape: char,
    pub subcomponent: char,
}

impl Default for Delimiters {
    fn default() -> Self {
        Delimiters {
            field: '|',
            component: '^',
            repetition: '~',
            escape: '\\',
            subcomponent: '&',
        }
    }
}

impl Delimiters {
    /// Delimiters from a field separator and the MSH-2 text.
    pub fn from_msh(field: char, msh2: &str) -> Result<Delimiters, Hl7Error> {
        let chars: Vec<char> = msh2.chars().collect();
        if !(4..=5).contains(&chars.len()) {
            return Err(Hl7Error::Encoding(format!(
                "MSH-2 must hold 4 encoding characters (like `^~\\&`), found `{msh2}`"
            )));
        }
        let d = Delimiters {
            field,
            component: chars[0],
            repetition: chars[1],
            escape: chars[2],
            subcomponent: chars[3],
        };
        let all = [field, d.component, d.repetition, d.escape, d.subcomponent];
        for (i, c) in all.iter().enumerate() {
            if c.is_alphanumeric() || c.is_whitespace() || all[..i].contains(c) {
                return Err(Hl7Error::Encoding(format!(
                    "encoding characters `{field}{msh2}` must be distinct and not letters, digits or spaces"
                )));
            }
        }
        Ok(d)
    }

    fn msh2(&self) -> String {
        [
            self.component,
            self.repetition,
            self.escape,
            self.subcomponent,
        ]
        .iter()
        .collect()
    }
}

/// Why a text is not an HL7 v2 message (or JSON not an HL7 message shape).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Hl7Error {
    #[error("empty message")]
    Empty,
    #[error("message does not start with an MSH segment (starts with `{0}`)")]
    NoHeader(String),
    #[error("{0}")]
    Encoding(String),
    #[error("segment {index}: `{name}` is not a segment name (3 letters or digits)")]
    SegmentName { index: usize, name: String },
    #[error("required field {0} is empty")]
    MissingField(&'static str),
    #[error(
        "message is not valid UTF-8 (first bad byte at offset {0}); decode it first with a `charset` step"
    )]
    NotUtf8(usize),
    #[error("JSON is not an HL7 message: {0}")]
    Shape(String),
}

/// Leading byte-order mark and blank lines are not part of the message.
fn trim_start(text: &str) -> &str {
    text.trim_start_matches(['\u{feff}', '\r', '\n', ' ', '\t'])
}

/// Segments, split on CR, LF or CRLF; blank lines skipped.
pub fn segments(text: &str) -> impl Iterator<Item = &str> {
    text.split(['\r', '\n']).filter(|s| !s.trim().is_empty())
}

/// Find the delimiters of a message whose first segment is MSH (or a batch
/// header FHS/BHS, which have the same layout).
pub fn delimiters(first_segment: &str) -> Result<Delimiters, Hl7Error> {
    let name: String = first_segment.chars().take(3).collect();
    if !matches!(name.as_str(), "MSH" | "FHS" | "BHS") {
        let shown: String = first_segment.chars().take(20).collect();
        return Err(Hl7Error::NoHeader(shown));
    }
    let mut rest = first_segment.chars().skip(3);
    let field = rest
        .next()
        .ok_or_else(|| Hl7Error::Encoding("MSH has no field separator (MSH-1)".into()))?;
    let msh2: String = rest.take_while(|c| *c != field).collect();
    Delimiters::from_msh(field, &msh2)
}

/// The MSH fields an acknowledgement needs, read leniently so that even a
/// broken header gets a meaningful reject.
#[derive(Debug, Clone, Default)]
pub struct Header {
    pub delimiters: Delimiters,
    /// Raw MSH fields by number (index 0 unused, 1 = separator, 2 = MSH-2, …).
    fields: Vec<String>,
    /// Why the header cannot be accepted, if it cannot.
    pub problem: Option<Hl7Error>,
}

impl Header {
    /// Read the header of `bytes`. Never fails: problems are recorded in
    /// [`Header::problem`] and missing fields read as empty.
    pub fn read(bytes: &[u8]) -> Header {
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => std::borrow::Cow::Borrowed(t),
            // Header fields are ASCII; a bad byte further on is the route's business.
            Err(e) => String::from_utf8_lossy(&bytes[..e.valid_up_to()])
                .into_owned()
                .into(),
        };
        let text = trim_start(&text);
        let mut h = Header::default();
        let Some(first) = segments(text).next() else {
            h.problem = Some(Hl7Error::Empty);
            return h;
        };
        if !["MSH", "FHS", "BHS"].iter().any(|n| first.starts_with(n)) {
            let shown: String = first.chars().take(20).collect();
            h.problem = Some(Hl7Error::NoHeader(shown));
            return h;
        }
        // A batch (FHS/BHS …) is acknowledged with its first message's header.
        let Some(first) = segments(text).find(|s| s.starts_with("MSH")) else {
            h.problem = Some(Hl7Error::NoHeader("a batch without MSH".into()));
            return h;
        };
        let Some(sep) = first.chars().nth(3) else {
            h.problem = Some(Hl7Error::Encoding(
                "MSH has no field separator (MSH-1)".into(),
            ));
            return h;
        };
        let parts: Vec<&str> = first.split(sep).collect();
        h.fields = std::iter::once(String::new())
            .chain(std::iter::once(sep.to_string()))
            .chain(parts.iter().skip(1).map(|s| s.to_string()))
            .collect();
        match Delimiters::from_msh(sep, h.field(2)) {
            Ok(d) => h.delimiters = d,
            Err(e) => {
                h.problem = Some(e);
                return h;
            }
        }
        for (n, name) in [
            (9, "MSH-9 (message type)"),
            (10, "MSH-10 (control id)"),
            (12, "MSH-12 (version)"),
        ] {
            if h.field(n).is_empty() {
                h.problem = Some(Hl7Error::MissingField(name));
                break;
            }
        }
        h
    }

    /// Raw text of MSH-`n` ("" when absent).
    pub fn field(&self, n: usize) -> &str {
        self.fields.get(n).map(String::as_str).unwrap_or("")
    }

    /// First component of MSH-`n`.
    fn component(&self, n: usize, c: usize) -> &str {
        self.field(n)
            .split(self.delimiters.component)
            .nth(c)
            .unwrap_or("")
    }

    pub fn control_id(&self) -> &str {
        self.field(10)
    }
}

/// Acknowledgement codes (original mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    /// Application accept: the message was delivered.
    Accept,
    /// Application error: processing failed.
    Error,
    /// Application reject: the message cannot be taken (bad header, system
    /// unavailable).
    Reject,
}

impl AckCode {
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::Accept => "AA",
            AckCode::Error => "AE",
            AckCode::Reject => "AR",
        }
    }
}

/// Build an ACK for `header`: sender and receiver swapped, same version and
/// processing id, `MSH-9 = ACK^<trigger>`, `MSA-2 = MSH-10`. An error text
/// goes into MSA-3 and, for v2.5 and later, an ERR segment (ERR-3 code
/// `207^Application internal error` or `101^Required field missing`, ERR-4
/// severity `E`, ERR-8 the text). Segments end with CR.
pub fn build_ack(
    header: &Header,
    code: AckCode,
    error: Option<&str>,
    ack_control_id: &str,
    now: DateTime<Utc>,
) -> String {
    let d = header.delimiters;
    let f = d.field;
    let trigger = header.component(9, 1);
    let message_type = if trigger.is_empty() {
        "ACK".to_string()
    } else {
        format!("ACK{}{}", d.component, trigger)
    };
    let version = header.field(12);
    let mut msh = vec![
        "MSH".to_string(),
        d.msh2(),
        header.field(5).to_string(),
        header.field(6).to_string(),
        header.field(3).to_string(),
        header.field(4).to_string(),
        now.format("%Y%m%d%H%M%S").to_string(),
        String::new(),
        message_type,
        escape(ack_control_id, &d),
        header.field(11).to_string(),
        version.to_string(),
    ];
    while msh.last().is_some_and(String::is_empty) {
        msh.pop();
    }
    let mut out = msh.join(&f.to_string());
    out.push('\r');
    let text = error.map(|e| {
        let one_line: String = e
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(200)
            .collect();
        escape(&one_line, &d)
    });
    out.push_str(&format!(
        "MSA{f}{}{f}{}",
        code.as_str(),
        escape(header.control_id(), &d)
    ));
    if let Some(t) = &text {
        out.push_str(&format!("{f}{t}"));
    }
    out.push('\r');
    if let Some(t) = text
        && version_at_least(version, 2, 5)
    {
        let (num, label) = match header.problem {
            Some(Hl7Error::MissingField(_)) => ("101", "Required field missing"),
            _ => ("207", "Application internal error"),
        };
        let c = d.component;
        out.push_str(&format!(
            "ERR{f}{f}{f}{num}{c}{label}{c}HL70357{f}E{f}{f}{f}{f}{t}\r"
        ));
    }
    out
}

fn version_at_least(version: &str, major: u32, minor: u32) -> bool {
    let mut parts = version
        .split(['.', '^'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

/// The acknowledgement code of an ACK message (MSA-1), e.g. `AA`.
pub fn ack_code(text: &str) -> Option<String> {
    let text = trim_start(text);
    let mut segs = segments(text);
    let d = delimiters(segs.next()?).ok()?;
    segs.find(|s| s.starts_with("MSA"))
        .and_then(|s| s.split(d.field).nth(1))
        .map(str::to_string)
}

/// The error text of an ACK: MSA-3, or else ERR-8 (unescaped).
pub fn ack_text(text: &str) -> Option<String> {
    let text = trim_start(text);
    let mut segs = segments(text);
    let d = delimiters(segs.next()?).ok()?;
    let field = |name: &str, n: usize| {
        segments(text)
            .find(|s| s.starts_with(name))
            .and_then(|s| s.split(d.field).nth(n))
            .filter(|t| !t.is_empty())
            .map(|t| unescape(t, &d))
    };
    field("MSA", 3).or_else(|| field("ERR", 8))
}

// ------------------------------------------------------------- to JSON

/// Parse a message into the JSON shape described in the module docs.
pub fn to_json(bytes: &[u8]) -> Result<Value, Hl7Error> {
    let text = std::str::from_utf8(bytes).map_err(|e| Hl7Error::NotUtf8(e.valid_up_to()))?;
    let text = trim_start(text);
    let mut segs = segments(text).peekable();
    let first = segs.peek().ok_or(Hl7Error::Empty)?;
    let d = delimiters(first)?;
    let mut out = Vec::new();
    for (index, seg) in segs.enumerate() {
        out.push(Value::Object(segment_to_json(seg, index + 1, &d)?));
    }
    let mut root = Map::new();
    root.insert("segments".into(), Value::Array(out));
    Ok(Value::Object(root))
}

fn segment_to_json(
    seg: &str,
    index: usize,
    d: &Delimiters,
) -> Result<Map<String, Value>, Hl7Error> {
    let mut parts = seg.split(d.field);
    let name = parts.next().unwrap_or("");
    if name.len() != 3
        || !name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        return Err(Hl7Error::SegmentName {
            index,
            name: name.chars().take(20).collect(),
        });
    }
    let mut obj = Map::new();
    obj.insert("segment".into(), Value::String(name.into()));
    let header = matches!(name, "MSH" | "FHS" | "BHS");
    let mut n = 1;
    if header {
        obj.insert("1".into(), Value::String(d.field.to_string()));
        if let Some(enc) = parts.next() {
            obj.insert("2".into(), Value::String(enc.into()));
        }
        n = 3;
    }
    for field in parts {
        let v = field_to_json(field, d);
        if !is_empty(&v) {
            obj.insert(n.to_string(), v);
        }
        n += 1;
    }
    Ok(obj)
}

fn is_empty(v: &Value) -> bool {
    matches!(v, Value::String(s) if s.is_empty())
}

fn field_to_json(field: &str, d: &Delimiters) -> Value {
    let reps: Vec<Value> = field
        .split(d.repetition)
        .map(|rep| {
            leveled(rep, d.component, |comp| {
                leveled(comp, d.subcomponent, |sub| Value::String(unescape(sub, d)))
            })
        })
        .collect();
    match <[Value; 1]>::try_from(reps) {
        Ok([one]) => one,
        Err(many) => Value::Array(many),
    }
}

/// Split `text` on `sep`; one part becomes `leaf(part)`, several become an
/// object keyed by position with empty parts left out. Trailing empty parts
/// are insignificant and dropped first.
fn leveled(text: &str, sep: char, leaf: impl Fn(&str) -> Value) -> Value {
    let mut parts: Vec<Value> = text.split(sep).map(&leaf).collect();
    while parts.len() > 1 && parts.last().is_some_and(is_empty) {
        parts.pop();
    }
    // Only a plain string collapses: a lone component holding subcomponents
    // stays wrapped, or it would read as a list of components.
    if parts.len() == 1 && parts[0].is_string() {
        return parts.pop().unwrap_or_default();
    }
    let mut obj = Map::new();
    for (i, p) in parts.into_iter().enumerate() {
        if !is_empty(&p) {
            obj.insert((i + 1).to_string(), p);
        }
    }
    Value::Object(obj)
}

/// Undo HL7 escapes. Unknown or formatting escapes are kept as written.
pub fn unescape(s: &str, d: &Delimiters) -> String {
    let e = d.escape;
    if !s.contains(e) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(e) {
        out.push_str(&rest[..i]);
        let after = &rest[i + e.len_utf8()..];
        let Some(j) = after.find(e) else {
            out.push_str(&rest[i..]);
            return out;
        };
        let seq = &after[..j];
        match seq {
            "F" => out.push(d.field),
            "S" => out.push(d.component),
            "T" => out.push(d.subcomponent),
            "R" => out.push(d.repetition),
            "E" => out.push(e),
            _ if seq.len() >= 3 && seq.starts_with('X') => match hex_text(&seq[1..]) {
                Some(t) => out.push_str(&t),
                None => {
                    out.push(e);
                    out.push_str(seq);
                    out.push(e);
                }
            },
            _ => {
                out.push(e);
                out.push_str(seq);
                out.push(e);
            }
        }
        rest = &after[j + e.len_utf8()..];
    }
    out.push_str(rest);
    out
}

/// `\Xhhhh\` payload: UTF-8 when it is, otherwise one character per byte.
fn hex_text(hex: &str) -> Option<String> {
    if !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or(0))
        .collect();
    Some(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => e.into_bytes().iter().map(|&b| char::from(b)).collect(),
    })
}

/// Whether `s` (starting just after an escape character) is a formatting
/// escape that must pass through unchanged; returns its length including
/// the closing escape character.
fn formatting_escape(s: &str, e: char) -> Option<usize> {
    let end = s.find(e)?;
    let seq = &s[..end];
    let ok = match seq.chars().next()? {
        'H' | 'N' => seq.len() == 1,
        '.' => {
            seq.len() > 1
                && seq.len() <= 8
                && seq[1..]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '+')
        }
        'Z' => {
            seq.len() > 1 && seq.len() <= 16 && seq[1..].chars().all(|c| c.is_ascii_alphanumeric())
        }
        'C' | 'M' => seq.len() > 1 && seq[1..].chars().all(|c| c.is_ascii_hexdigit()),
        _ => false,
    };
    ok.then_some(end + e.len_utf8())
}

/// Escape delimiters in a value; CR and LF become `\X0D\` and `\X0A\`.
pub fn escape(s: &str, d: &Delimiters) -> String {
    let e = d.escape;
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let Some(c) = s[i..].chars().next() else {
            break;
        };
        let next = i + c.len_utf8();
        if c == e
            && let Some(len) = formatting_escape(&s[next..], e)
        {
            out.push_str(&s[i..next + len]);
            i = next + len;
            continue;
        }
        let code = if c == e {
            Some("E")
        } else if c == d.field {
            Some("F")
        } else if c == d.component {
            Some("S")
        } else if c == d.subcomponent {
            Some("T")
        } else if c == d.repetition {
            Some("R")
        } else if c == '\r' {
            Some("X0D")
        } else if c == '\n' {
            Some("X0A")
        } else {
            None
        };
        match code {
            Some(code) => {
                out.push(e);
                out.push_str(code);
                out.push(e);
            }
            None => out.push(c),
        }
        i = next;
    }
    out
}

// ------------------------------------------------------------- from JSON

/// Write the JSON shape back as HL7, segments joined with `segment_end`.
pub fn from_json(v: &Value, segment_end: &str) -> Result<String, Hl7Error> {
    let segs = v
        .get("segments")
        .and_then(Value::as_array)
        .ok_or_else(|| Hl7Error::Shape("expected an object with a `segments` array".into()))?;
    let first = segs
        .first()
        .ok_or_else(|| Hl7Error::Shape("`segments` is empty".into()))?;
    let d = json_delimiters(first)?;
    let mut out = String::new();
    for (i, seg) in segs.iter().enumerate() {
        let obj = seg
            .as_object()
            .ok_or_else(|| Hl7Error::Shape(format!("segments[{i}] is not an object")))?;
        out.push_str(&segment_from_json(obj, i, &d)?);
        out.push_str(segment_end);
    }
    Ok(out)
}

fn json_delimiters(first: &Value) -> Result<Delimiters, Hl7Error> {
    let name = first.get("segment").and_then(Value::as_str).unwrap_or("");
    if !matches!(name, "MSH" | "FHS" | "BHS") {
        return Err(Hl7Error::Shape(format!(
            "the first segment must be MSH, not `{name}`"
        )));
    }
    let def = Delimiters::default();
    let field = first
        .get("1")
        .and_then(Value::as_str)
        .and_then(|s| s.chars().next())
        .unwrap_or(def.field);
    let msh2 = first.get("2").and_then(Value::as_str).unwrap_or("^~\\&");
    Delimiters::from_msh(field, msh2)
}

fn positions<'a>(
    obj: &'a Map<String, Value>,
    what: &str,
) -> Result<Vec<(usize, &'a Value)>, Hl7Error> {
    let mut v = Vec::new();
    for (k, val) in obj {
        if k == "segment" && what == "segment" {
            continue;
        }
        let n: usize = k
            .parse()
            .ok()
            .filter(|n| *n >= 1 && *n <= 10_000)
            .ok_or_else(|| {
                Hl7Error::Shape(format!("key `{k}` in a {what} is not a position (1, 2, …)"))
            })?;
        v.push((n, val));
    }
    v.sort_by_key(|(n, _)| *n);
    Ok(v)
}

fn segment_from_json(
    obj: &Map<String, Value>,
    i: usize,
    d: &Delimiters,
) -> Result<String, Hl7Error> {
    let name = obj
        .get("segment")
        .and_then(Value::as_str)
        .ok_or_else(|| Hl7Error::Shape(format!("segments[{i}] has no `segment` name")))?;
    if name.len() != 3
        || !name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        return Err(Hl7Error::SegmentName {
            index: i + 1,
            name: name.into(),
        });
    }
    let header = matches!(name, "MSH" | "FHS" | "BHS");
    let mut fields: Vec<String> = Vec::new();
    for (n, val) in positions(obj, "segment")? {
        if header && n <= 2 {
            continue;
        }
        let text =
            join_level(val, d, 0).map_err(|e| Hl7Error::Shape(format!("{name}-{n}: {e}")))?;
        if fields.len() < n {
            fields.resize(n, String::new());
        }
        fields[n - 1] = text;
    }
    let f = d.field.to_string();
    if header {
        // MSH-1 is the separator itself, MSH-2 the encoding characters.
        let rest = fields.get(2..).unwrap_or(&[]).join(&f);
        let mut s = format!("{name}{f}{}", d.msh2());
        if !rest.is_empty() || fields.len() > 2 {
            s.push_str(&f);
            s.push_str(&rest);
        }
        Ok(s)
    } else {
        let mut s = name.to_string();
        for field in fields {
            s.push_str(&f);
            s.push_str(&field);
        }
        Ok(s)
    }
}

/// level 0 = field (array = repetitions), 1 = component, 2 = subcomponent.
fn join_level(v: &Value, d: &Delimiters, level: u8) -> Result<String, String> {
    match v {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(escape(s, d)),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Array(reps) if level == 0 => {
            let parts: Result<Vec<String>, String> =
                reps.iter().map(|r| join_level(r, d, 1)).collect();
            Ok(parts?.join(&d.repetition.to_string()))
        }
        Value::Array(_) => Err("an array (repetition) inside a component".into()),
        Value::Object(obj) => {
            let (sep, next) = match level {
                0 | 1 => (d.component, 2),
                2 => (d.subcomponent, 3),
                _ => return Err("objects nested deeper than subcomponents".into()),
            };
            let items = positions(obj, "component").map_err(|e| e.to_string())?;
            let mut parts: Vec<String> = Vec::new();
            for (n, val) in items {
                if parts.len() < n {
                    parts.resize(n, String::new());
                }
                parts[n - 1] = join_level(val, d, next)?;
            }
            Ok(parts.join(&sep.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ADT: &str = "MSH|^~\\&|SEND|FAC|RECV|RFAC|20240101120000||ADT^A01^ADT_A01|MSG001|P|2.5.1\r\
EVN|A01|20240101120000\r\
PID|1||123^^^HOSP^MR~456^^^SSA^SS||Smith^John^Q||19800101|M|||1 Main St^^Town^ST^12345||555\\F\\1234|\r\
OBX|1|TX|note||a \\S\\ b \\T\\ c \\R\\ d \\E\\ e \\X0D\\ f \\H\\bold\\N\\||||||F\r\
OBX|2|CE|code^text&sub1&sub2\r";

    #[test]
    fn parses_fields_components_repetitions_and_escapes() {
        let v = to_json(ADT.as_bytes()).unwrap();
        let segs = v["segments"].as_array().unwrap();
        assert_eq!(segs.len(), 5);
        assert_eq!(segs[0]["segment"], "MSH");
        assert_eq!(segs[0]["1"], "|");
        assert_eq!(segs[0]["2"], "^~\\&");
        assert_eq!(
            segs[0]["9"],
            json!({"1": "ADT", "2": "A01", "3": "ADT_A01"})
        );
        assert_eq!(segs[0]["10"], "MSG001");
        let pid = &segs[2];
        assert_eq!(pid["3"][0], json!({"1": "123", "4": "HOSP", "5": "MR"}));
        assert_eq!(pid["3"][1]["4"], "SSA");
        assert_eq!(pid["5"], json!({"1": "Smith", "2": "John", "3": "Q"}));
        assert_eq!(pid["13"], "555|1234");
        assert!(pid.get("2").is_none(), "empty fields are left out");
        assert_eq!(segs[3]["5"], "a ^ b & c ~ d \\ e \r f \\H\\bold\\N\\");
        assert_eq!(
            segs[4]["3"],
            json!({"1": "code", "2": {"1": "text", "2": "sub1", "3": "sub2"}})
        );
        // Segment order and repeated segments are kept.
        assert_eq!(segs[3]["segment"], "OBX");
        assert_eq!(segs[4]["1"], "2");
    }

    #[test]
    fn json_round_trips_and_hl7_round_trips_up_to_trailing_delimiters() {
        let v = to_json(ADT.as_bytes()).unwrap();
        let back = from_json(&v, "\r").unwrap();
        let expect = ADT.replace("||555\\F\\1234|\r", "||555\\F\\1234\r");
        assert_eq!(back, expect);
        assert_eq!(to_json(back.as_bytes()).unwrap(), v);
    }

    #[test]
    fn lf_crlf_bom_and_custom_delimiters_are_accepted() {
        let lf = ADT.replace('\r', "\n");
        let crlf = format!("\u{feff}{}", ADT.replace('\r', "\r\n"));
        let v = to_json(ADT.as_bytes()).unwrap();
        assert_eq!(to_json(lf.as_bytes()).unwrap(), v);
        assert_eq!(to_json(crlf.as_bytes()).unwrap(), v);
        let custom = "MSH#*!@%#A#B\rPID#1#x*y!z%w\r";
        let v = to_json(custom.as_bytes()).unwrap();
        assert_eq!(
            v["segments"][1]["2"],
            json!([{"1": "x", "2": "y"}, {"1": {"1": "z", "2": "w"}}])
        );
        assert_eq!(from_json(&v, "\r").unwrap(), custom);
    }

    #[test]
    fn broken_headers_are_errors_not_panics() {
        for bad in [
            "",
            "\r\n",
            "MSH",
            "MSH|",
            "MSH||A|B",
            "MSH|^~|A",
            "MSH|^^\\&|",
            "PID|1",
            "MSHH0\r",
        ] {
            assert!(to_json(bad.as_bytes()).is_err(), "{bad:?}");
            assert!(Header::read(bad.as_bytes()).problem.is_some(), "{bad:?}");
        }
        assert!(matches!(
            to_json(b"MSH|^~\\&|\rP1D x|"),
            Err(Hl7Error::SegmentName { .. })
        ));
        assert!(matches!(
            to_json(b"MSH|^~\\&\r\xff"),
            Err(Hl7Error::NotUtf8(_))
        ));
    }

    #[test]
    fn header_requires_type_control_id_and_version() {
        let ok = Header::read(ADT.as_bytes());
        assert!(ok.problem.is_none());
        assert_eq!(ok.control_id(), "MSG001");
        let no_id = Header::read(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01||P|2.5\r");
        assert_eq!(
            no_id.problem,
            Some(Hl7Error::MissingField("MSH-10 (control id)"))
        );
    }

    #[test]
    fn ack_swaps_sender_and_receiver_and_echoes_the_control_id() {
        let h = Header::read(ADT.as_bytes());
        let now = DateTime::parse_from_rfc3339("2024-02-03T04:05:06Z")
            .unwrap()
            .with_timezone(&Utc);
        let ack = build_ack(&h, AckCode::Accept, None, "ACK1", now);
        assert_eq!(
            ack,
            "MSH|^~\\&|RECV|RFAC|SEND|FAC|20240203040506||ACK^A01|ACK1|P|2.5.1\rMSA|AA|MSG001\r"
        );
        let nak = build_ack(
            &h,
            AckCode::Error,
            Some("sink 1 (http): refused | down\n"),
            "ACK2",
            now,
        );
        assert!(
            nak.contains("\rMSA|AE|MSG001|sink 1 (http): refused \\F\\ down \r"),
            "{nak}"
        );
        assert!(
            nak.contains("\rERR|||207^Application internal error^HL70357|E||||sink 1"),
            "{nak}"
        );
        assert_eq!(ack_code(&nak).as_deref(), Some("AE"));
        assert_eq!(
            ack_text(&nak).as_deref(),
            Some("sink 1 (http): refused | down ")
        );
        // A v2.3 message gets no ERR segment (its ERR layout differs).
        let old = Header::read(b"MSH|^~\\&|A|B|C|D|2024||ORM^O01|X1|P|2.3\r");
        assert!(!build_ack(&old, AckCode::Error, Some("x"), "1", now).contains("ERR"));
        // Even without a usable header there is an AR to send.
        let broken = Header::read(b"");
        let ar = build_ack(&broken, AckCode::Reject, Some("empty message"), "1", now);
        assert!(ar.starts_with("MSH|^~\\&|"), "{ar}");
        assert!(ar.contains("MSA|AR||empty message"), "{ar}");
    }
}
