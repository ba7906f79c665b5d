//! Character data and attribute values: the five predefined entities and character
//! references, line-end normalisation and trimming of element text (XML 1.0 §2.11),
//! attribute-value normalisation (§3.3.3), and the optional typing of values (`infer_types`).
//!
//! Invariant: only `&lt;` `&gt;` `&amp;` `&apos;` `&quot;` and character references to legal
//! characters are expanded; any other entity is a [`Problem::Undeclared`], never looked up.
//! Errors are [`Problem`]s without a position: the converter attaches one. Text stays borrowed
//! from the input while it is a single piece.

use std::borrow::Cow;

use quick_xml::events::BytesRef;
use serde_json::{Number, Value};

use super::chars::{is_xml_char, is_xml_name, is_xml_space};

/// Why a text or attribute fragment is refused, before a position is attached.
pub(super) enum Problem {
    Malformed(String),
    Undeclared(String),
}

pub(super) enum Resolved {
    Char(char),
    Str(&'static str),
}

pub(super) fn resolve_reference(r: &BytesRef<'_>) -> Result<Resolved, Problem> {
    let name: &str = r;
    if r.is_char_ref() {
        return match r.resolve_char_ref() {
            Ok(Some(c)) if is_xml_char(c) => Ok(Resolved::Char(c)),
            _ => Err(Problem::Malformed(format!(
                "`&{name};` is not a valid character reference"
            ))),
        };
    }
    resolve_named(name).map(Resolved::Str)
}

fn resolve_named(name: &str) -> Result<&'static str, Problem> {
    match name {
        "lt" => Ok("<"),
        "gt" => Ok(">"),
        "amp" => Ok("&"),
        "apos" => Ok("'"),
        "quot" => Ok("\""),
        _ if is_xml_name(name) => Err(Problem::Undeclared(format!("&{name};"))),
        _ => Err(Problem::Malformed(format!(
            "`&{name};` is not a valid entity reference"
        ))),
    }
}

/// Appends a text piece: leading whitespace of the element's text is skipped, line ends are
/// normalised (`\r\n` and `\r` → `\n`, XML 1.0 §2.11), and a single piece stays borrowed.
pub(super) fn append_text<'a>(text: &mut Cow<'a, str>, piece: Cow<'a, str>) {
    let piece = if text.is_empty() {
        match piece {
            Cow::Borrowed(s) => Cow::Borrowed(s.trim_start_matches(is_xml_space)),
            Cow::Owned(s) => Cow::Owned(s.trim_start_matches(is_xml_space).to_owned()),
        }
    } else {
        piece
    };
    if piece.is_empty() {
        return;
    }
    let piece = if piece.contains('\r') {
        Cow::Owned(piece.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        piece
    };
    if text.is_empty() {
        *text = piece;
    } else {
        text.to_mut().push_str(&piece);
    }
}

pub(super) fn trim_end_cow(text: Cow<'_, str>) -> Cow<'_, str> {
    match text {
        Cow::Borrowed(s) => Cow::Borrowed(s.trim_end_matches(is_xml_space)),
        Cow::Owned(mut s) => {
            let len = s.trim_end_matches(is_xml_space).len();
            s.truncate(len);
            Cow::Owned(s)
        }
    }
}

/// Attribute-value normalisation (XML 1.0 §3.3.3): whitespace characters become spaces,
/// `\r\n` one space, references are expanded; `<` and bare `&` are errors. Errors carry the
/// byte offset inside `raw`.
pub(super) fn normalize_attr_value(raw: &str) -> Result<Cow<'_, str>, (usize, Problem)> {
    if !raw
        .bytes()
        .any(|b| matches!(b, b'&' | b'<' | b'\t' | b'\n' | b'\r'))
    {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find(['&', '<', '\t', '\n', '\r']) {
        out.push_str(&rest[..i]);
        let at = raw.len() - rest.len() + i;
        match rest.as_bytes()[i] {
            b'<' => {
                return Err((
                    at,
                    Problem::Malformed("`<` is not allowed in an attribute value".to_owned()),
                ));
            }
            b'&' => {
                let after = &rest[i + 1..];
                let Some(end) = after.find(';') else {
                    return Err((
                        at,
                        Problem::Malformed(
                            "`&` must start a reference like `&amp;` in an attribute value"
                                .to_owned(),
                        ),
                    ));
                };
                let name = &after[..end];
                if let Some(num) = name.strip_prefix('#') {
                    match parse_char_ref(num) {
                        Some(c) => out.push(c),
                        None => {
                            return Err((
                                at,
                                Problem::Malformed(format!(
                                    "`&{name};` is not a valid character reference"
                                )),
                            ));
                        }
                    }
                } else {
                    out.push_str(resolve_named(name).map_err(|p| (at, p))?);
                }
                rest = &after[end + 1..];
                continue;
            }
            b'\r' => {
                out.push(' ');
                rest = rest[i + 1..].strip_prefix('\n').unwrap_or(&rest[i + 1..]);
                continue;
            }
            _ => out.push(' '),
        }
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

fn parse_char_ref(num: &str) -> Option<char> {
    let code = match num.strip_prefix('x') {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u32::from_str_radix(hex, 16).ok()?
        }
        None if !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()) => num.parse().ok()?,
        _ => return None,
    };
    char::from_u32(code).filter(|c| is_xml_char(*c))
}

/// `text` typed as a JSON number or boolean when `infer_types` is on. Conservative: only the
/// JSON number grammar (so no `007`, `+1`, `.5`, `1.`), integers that fit i64/u64, and
/// decimals with at most 15 significant digits that stay finite, so the number means exactly
/// what the text said. `-0` stays a string because the sign would be lost.
pub(super) fn infer_type(text: &str) -> Option<Value> {
    match text {
        "true" => return Some(Value::Bool(true)),
        "false" => return Some(Value::Bool(false)),
        _ => {}
    }
    let b = text.as_bytes();
    let digits = |mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    let mut i = usize::from(b.first() == Some(&b'-'));
    let int_start = i;
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(i),
        _ => return None,
    }
    let int_end = i;
    let mut fractional = false;
    if b.get(i) == Some(&b'.') {
        let end = digits(i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
        fractional = true;
    }
    let mantissa_end = i;
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let end = digits(i);
        if end == i {
            return None;
        }
        i = end;
        fractional = true;
    }
    if i != b.len() {
        return None;
    }
    if !fractional {
        if text == "-0" {
            return None;
        }
        if let Ok(v) = text.parse::<i64>() {
            return Some(Value::Number(v.into()));
        }
        return text.parse::<u64>().ok().map(|v| Value::Number(v.into()));
    }
    let mantissa = &b[int_start..mantissa_end];
    let significant = mantissa
        .iter()
        .filter(|d| d.is_ascii_digit())
        .skip_while(|&&d| d == b'0')
        .count();
    let nonzero = mantissa.iter().any(|&d| (b'1'..=b'9').contains(&d));
    if significant > 15 || int_end == int_start {
        return None;
    }
    let f: f64 = text.parse().ok()?;
    if !f.is_finite() || (f == 0.0 && nonzero) {
        return None;
    }
    Number::from_f64(f).map(Value::Number)
}
#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::XmlToJsonOptions;
    use super::super::test_support::{convert, convert_with};

    #[test]
    fn mixed_content_joins_text_pieces_and_keeps_inner_text_as_written() {
        let v = convert("<p>\n  Hello <b>big</b> world,\n  bye  </p>");
        assert_eq!(
            v,
            json!({"p": {"b": "big", "#text": "Hello  world,\n  bye"}})
        );
    }

    #[test]
    fn predefined_entities_and_character_references_are_expanded() {
        let v = convert(r#"<a t="&lt;&#x41;&#66;&quot;">&amp;&apos;&gt;&#169;&#xA9;</a>"#);
        assert_eq!(v, json!({"a": {"@t": "<AB\"", "#text": "&'>©©"}}));
    }

    #[test]
    fn attribute_values_are_normalised() {
        let v = convert("<a t=\"x\ty\r\nz&#10;\"/>");
        assert_eq!(v, json!({"a": {"@t": "x y z\n"}}));
    }

    #[test]
    fn line_ends_in_text_are_normalised() {
        let v = convert("<a>x\r\ny\rz</a>");
        assert_eq!(v, json!({"a": "x\ny\nz"}));
    }

    #[test]
    fn infer_types_is_conservative() {
        let opts = XmlToJsonOptions {
            infer_types: true,
            ..XmlToJsonOptions::default()
        };
        let xml = r#"<r n="5"><a>-12</a><b>3.5</b><c>1e3</c><zip>007</zip><plus>+1</plus><t>true</t><f>false</f><big>123456789012345678901234567890</big><long>3.14159265358979323846</long><T>True</T><neg0>-0</neg0><u>18446744073709551615</u></r>"#;
        let v = convert_with(xml, &opts);
        assert_eq!(
            v,
            json!({"r": {"@n": 5, "a": -12, "b": 3.5, "c": 1000.0, "zip": "007", "plus": "+1",
                   "t": true, "f": false, "big": "123456789012345678901234567890",
                   "long": "3.14159265358979323846", "T": "True", "neg0": "-0",
                   "u": 18446744073709551615u64}})
        );
        // Default: everything stays a string.
        assert_eq!(convert("<a>12</a>"), json!({"a": "12"}));
    }
}
