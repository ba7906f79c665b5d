//! The JSON → XML writer, inverting the conventions of `xml_to_json`: `@x` → attribute,
//! `#text` → text, arrays → repeated elements, null → empty element, numbers and booleans →
//! their text.
//!
//! Invariant: the writer is iterative (an explicit stack of work items), so any JSON depth is
//! safe. Every element and attribute name written is an XML `Name` and every string is escaped
//! so that reading it back (attribute and line-end normalisation included) gives the same
//! characters; JSON with no XML form is an error naming the key and its JSONPath.

use std::io::Write as _;

use serde_json::Value;

use super::chars::{is_xml_char, is_xml_name};
use super::{JsonToXmlOptions, XmlError};

/// Writes `value` as an XML document: the declaration when asked for, then the root element.
pub(super) fn write(value: &Value, opts: &JsonToXmlOptions) -> Result<Vec<u8>, XmlError> {
    let mut out = Vec::with_capacity(256);
    if opts.declaration {
        out.extend_from_slice(br#"<?xml version="1.0" encoding="UTF-8"?>"#);
        if opts.indent.is_some() {
            out.push(b'\n');
        }
    }
    let mut writer = XmlWriter {
        out,
        indent: opts.indent,
        top: value,
        stack: Vec::new(),
    };
    // An explicit `root` always wraps; otherwise the single top-level key is the root.
    let single = if opts.root.is_some() {
        None
    } else {
        single_root(value)
    };
    match single {
        Some((name, root)) => writer.stack.push(Work::Element {
            name,
            value: root,
            parent: value,
            depth: 0,
        }),
        None => {
            let name = opts.root.as_deref().ok_or(XmlError::RootNeeded {
                reason: match value {
                    Value::Object(map) if map.len() > 1 => "has several top-level keys",
                    Value::Object(map) if map.is_empty() => "is an empty object",
                    Value::Object(_) => "has one top-level key that cannot be the root element",
                    Value::Array(_) => "is an array",
                    _ => "is not an object",
                },
            })?;
            if !is_xml_name(name) {
                return Err(XmlError::InvalidElementName {
                    key: name.to_owned(),
                    path: "`root` option".to_owned(),
                });
            }
            match value {
                // A top-level array has no names for its items: they become `<item>`s.
                Value::Array(items) => {
                    writer.out.extend_from_slice(b"<");
                    writer.out.extend_from_slice(name.as_bytes());
                    writer.out.extend_from_slice(b">");
                    writer.stack.push(Work::Close {
                        name,
                        depth: 0,
                        newline: !items.is_empty(),
                    });
                    for item in items.iter().rev() {
                        writer.stack.push(Work::Element {
                            name: "item",
                            value: item,
                            parent: value,
                            depth: 1,
                        });
                    }
                }
                _ => writer.stack.push(Work::Element {
                    name,
                    value,
                    parent: value,
                    depth: 0,
                }),
            }
        }
    }
    writer.run()?;
    let mut out = writer.out;
    if opts.indent.is_some() {
        out.push(b'\n');
    }
    Ok(out)
}

/// The root element when the JSON is `{ "name": value }` with an element name and a value
/// that makes exactly one element.
fn single_root(value: &Value) -> Option<(&str, &Value)> {
    let Value::Object(map) = value else {
        return None;
    };
    if map.len() != 1 {
        return None;
    }
    let (name, root) = map.iter().next()?;
    if name.starts_with('@') || name.starts_with('#') {
        return None;
    }
    match root {
        Value::Array(items) if items.len() != 1 => None,
        _ => Some((name, root)),
    }
}

enum Work<'v> {
    /// Write element `name` with `value`; `parent` is the JSON value holding it (for paths in
    /// errors).
    Element {
        name: &'v str,
        value: &'v Value,
        parent: &'v Value,
        depth: usize,
    },
    Close {
        name: &'v str,
        depth: usize,
        newline: bool,
    },
}

/// Iterative writer: an explicit stack of work items instead of recursion, so any JSON depth
/// is safe.
struct XmlWriter<'v> {
    out: Vec<u8>,
    indent: Option<usize>,
    top: &'v Value,
    stack: Vec<Work<'v>>,
}

impl<'v> XmlWriter<'v> {
    fn run(&mut self) -> Result<(), XmlError> {
        while let Some(work) = self.stack.pop() {
            match work {
                Work::Close {
                    name,
                    depth,
                    newline,
                } => {
                    if newline {
                        self.newline(depth);
                    }
                    self.out.extend_from_slice(b"</");
                    self.out.extend_from_slice(name.as_bytes());
                    self.out.push(b'>');
                }
                Work::Element {
                    name,
                    value,
                    parent,
                    depth,
                } => self.element(name, value, parent, depth)?,
            }
        }
        Ok(())
    }

    fn newline(&mut self, depth: usize) {
        if let Some(n) = self.indent {
            self.out.push(b'\n');
            self.out.resize(self.out.len() + n * depth, b' ');
        }
    }

    fn path(&self, target: &Value) -> String {
        json_path_to(self.top, target)
    }

    fn element(
        &mut self,
        name: &'v str,
        value: &'v Value,
        parent: &'v Value,
        depth: usize,
    ) -> Result<(), XmlError> {
        if let Value::Array(items) = value {
            for item in items.iter().rev() {
                if item.is_array() {
                    return Err(XmlError::Unrepresentable {
                        path: self.path(item),
                        reason: "an array inside an array has no XML form".to_owned(),
                    });
                }
                self.stack.push(Work::Element {
                    name,
                    value: item,
                    parent,
                    depth,
                });
            }
            return Ok(());
        }
        if !is_xml_name(name) {
            return Err(XmlError::InvalidElementName {
                key: name.to_owned(),
                path: self.path(parent),
            });
        }
        if depth > 0 {
            self.newline(depth);
        }
        self.out.push(b'<');
        self.out.extend_from_slice(name.as_bytes());
        let map = match value {
            Value::Null => {
                self.out.extend_from_slice(b"/>");
                return Ok(());
            }
            Value::Object(map) => map,
            scalar => {
                self.out.push(b'>');
                self.scalar_text(scalar, false)?;
                self.out.extend_from_slice(b"</");
                self.out.extend_from_slice(name.as_bytes());
                self.out.push(b'>');
                return Ok(());
            }
        };
        let mut text = None;
        let mut children = 0;
        for (key, v) in map {
            if let Some(attr) = key.strip_prefix('@') {
                if !is_xml_name(attr) {
                    return Err(XmlError::InvalidAttributeName {
                        key: key.clone(),
                        path: self.path(value),
                    });
                }
                self.out.push(b' ');
                self.out.extend_from_slice(attr.as_bytes());
                self.out.extend_from_slice(b"=\"");
                match v {
                    Value::Null => {}
                    Value::Object(_) | Value::Array(_) => {
                        return Err(XmlError::Unrepresentable {
                            path: self.path(v),
                            reason: "an attribute value must be a string, number, boolean or \
                                     null"
                                .to_owned(),
                        });
                    }
                    scalar => self.scalar_text(scalar, true)?,
                }
                self.out.push(b'"');
            } else if key == "#text" {
                text = Some(v);
            } else if key.starts_with('#') {
                return Err(XmlError::InvalidElementName {
                    key: key.clone(),
                    path: self.path(value),
                });
            } else {
                children += 1;
            }
        }
        let text = match text {
            None | Some(Value::Null) => None,
            Some(t @ (Value::Object(_) | Value::Array(_))) => {
                return Err(XmlError::Unrepresentable {
                    path: self.path(t),
                    reason: "`#text` must be a string, number, boolean or null".to_owned(),
                });
            }
            Some(t) => Some(t),
        };
        if text.is_none() && children == 0 {
            self.out.extend_from_slice(b"/>");
            return Ok(());
        }
        self.out.push(b'>');
        if let Some(t) = text {
            self.scalar_text(t, false)?;
        }
        if children == 0 {
            self.out.extend_from_slice(b"</");
            self.out.extend_from_slice(name.as_bytes());
            self.out.push(b'>');
            return Ok(());
        }
        self.stack.push(Work::Close {
            name,
            depth,
            newline: true,
        });
        for (key, v) in map.iter().rev() {
            if !key.starts_with(['@', '#']) {
                self.stack.push(Work::Element {
                    name: key,
                    value: v,
                    parent: value,
                    depth: depth + 1,
                });
            }
        }
        Ok(())
    }

    /// Writes a string, number or boolean escaped for text or an attribute value.
    fn scalar_text(&mut self, value: &Value, attribute: bool) -> Result<(), XmlError> {
        match value {
            Value::String(s) => {
                if let Some(c) = s.chars().find(|c| !is_xml_char(*c)) {
                    return Err(XmlError::Unrepresentable {
                        path: self.path(value),
                        reason: format!("character U+{:04X} cannot appear in XML 1.0", c as u32),
                    });
                }
                escape_into(&mut self.out, s, attribute);
            }
            Value::Number(n) => {
                // Writing into a Vec cannot fail.
                let _ = write!(self.out, "{n}");
            }
            Value::Bool(b) => self
                .out
                .extend_from_slice(if *b { b"true" } else { b"false" }),
            Value::Null | Value::Object(_) | Value::Array(_) => {}
        }
        Ok(())
    }
}

/// Escapes `&`, `<`, `>` always; in attributes also `"` and the whitespace characters that
/// attribute normalisation would turn into spaces; `\r` everywhere, because line-end
/// normalisation would turn it into `\n`.
fn escape_into(out: &mut Vec<u8>, s: &str, attribute: bool) {
    let bytes = s.as_bytes();
    let mut last = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let replacement: &[u8] = match b {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'\r' => b"&#13;",
            b'"' if attribute => b"&quot;",
            b'\n' if attribute => b"&#10;",
            b'\t' if attribute => b"&#9;",
            _ => continue,
        };
        out.extend_from_slice(&bytes[last..i]);
        out.extend_from_slice(replacement);
        last = i + 1;
    }
    out.extend_from_slice(&bytes[last..]);
}

/// JSONPath (`$.order.lines[2]`) of `target` inside `root`, found by identity. Only used to
/// word an error, so a search is cheaper overall than tracking paths while writing.
fn json_path_to(root: &Value, target: &Value) -> String {
    let mut stack: Vec<(&Value, String)> = vec![(root, "$".to_owned())];
    while let Some((value, path)) = stack.pop() {
        if std::ptr::eq(value, target) {
            return path;
        }
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    let simple = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    let child_path = if simple {
                        format!("{path}.{key}")
                    } else {
                        format!("{path}['{}']", key.replace('\'', "\\'"))
                    };
                    stack.push((child, child_path));
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    stack.push((child, format!("{path}[{i}]")));
                }
            }
            _ => {}
        }
    }
    "$".to_owned()
}
#[cfg(test)]
mod tests {
    use serde_json::{Map, Value, json};

    use super::super::test_support::convert;
    use super::super::{JsonToXmlOptions, XmlToJsonOptions, json_to_xml, xml_to_json};

    #[test]
    fn json_to_xml_inverts_the_conventions() {
        let v = json!({"order": {"@id": "7", "customer": "Ann", "line": [{"sku": "a"}, {"sku": "b"}],
                       "note": null, "total": {"@currency": "EUR", "#text": 12.5}, "paid": true}});
        let xml = json_to_xml(&v, &JsonToXmlOptions::default()).expect("xml");
        assert_eq!(
            String::from_utf8(xml).expect("utf-8"),
            r#"<?xml version="1.0" encoding="UTF-8"?><order id="7"><customer>Ann</customer><line><sku>a</sku></line><line><sku>b</sku></line><note/><total currency="EUR">12.5</total><paid>true</paid></order>"#
        );
    }

    #[test]
    fn json_to_xml_escapes_text_and_attributes() {
        let v = json!({"a": {"@q": "\"<&>'\t\n\r", "#text": "<b> & \"c\" ]]> \r."}});
        let opts = JsonToXmlOptions {
            declaration: false,
            ..JsonToXmlOptions::default()
        };
        let xml = json_to_xml(&v, &opts).expect("xml");
        assert_eq!(
            String::from_utf8(xml.clone()).expect("utf-8"),
            "<a q=\"&quot;&lt;&amp;&gt;'&#9;&#10;&#13;\">&lt;b&gt; &amp; \"c\" ]]&gt; &#13;.</a>"
        );
        let back = xml_to_json(&xml, &XmlToJsonOptions::default()).expect("parses back");
        assert_eq!(back, v);
    }

    #[test]
    fn json_to_xml_errors_name_the_key_and_path() {
        let v = json!({"order": {"lines": [{"ok": 1}, {"ok": 2}, {"1abc": "x"}]}});
        let e = json_to_xml(&v, &JsonToXmlOptions::default()).expect_err("bad key");
        assert_eq!(
            e.to_string(),
            "cannot make an XML element name from key `1abc` at $.order.lines[2]"
        );
        let v = json!({"a": {"@b c": "x"}});
        let e = json_to_xml(&v, &JsonToXmlOptions::default()).expect_err("bad attr");
        assert_eq!(
            e.to_string(),
            "cannot make an XML attribute name from key `@b c` at $.a"
        );
        let v = json!({"a": [[1]]});
        let e = json_to_xml(&v, &JsonToXmlOptions::default()).expect_err("nested array");
        assert!(e.to_string().contains("at $.a[0]"), "{e}");
        let v = json!({"a": "bell\u{7}"});
        let e = json_to_xml(&v, &JsonToXmlOptions::default()).expect_err("control char");
        assert!(e.to_string().contains("U+0007"), "{e}");
    }

    #[test]
    fn json_to_xml_needs_a_root_or_wraps_in_the_given_one() {
        let opts = JsonToXmlOptions {
            root: None,
            declaration: false,
            indent: None,
        };
        let e = json_to_xml(&json!({"a": 1, "b": 2}), &opts).expect_err("needs root");
        assert!(e.to_string().contains("several top-level keys"), "{e}");
        let opts = JsonToXmlOptions {
            root: Some("doc".to_owned()),
            ..opts
        };
        let xml =
            |v: Value| String::from_utf8(json_to_xml(&v, &opts).expect("xml")).expect("utf-8");
        assert_eq!(xml(json!({"a": 1, "b": 2})), "<doc><a>1</a><b>2</b></doc>");
        assert_eq!(xml(json!({"a": 1})), "<doc><a>1</a></doc>");
        assert_eq!(xml(json!({"a": [1, 2]})), "<doc><a>1</a><a>2</a></doc>");
        assert_eq!(
            xml(json!([1, {"x": null}])),
            "<doc><item>1</item><item><x/></item></doc>"
        );
        assert_eq!(xml(json!("hi")), "<doc>hi</doc>");
    }

    #[test]
    fn json_to_xml_indents_and_round_trips() {
        let opts = JsonToXmlOptions {
            indent: Some(2),
            ..JsonToXmlOptions::default()
        };
        let v = json!({"r": {"@a": "1", "x": ["1", "2"], "y": {"z": null}, "#text": "t"}});
        let xml = String::from_utf8(json_to_xml(&v, &opts).expect("xml")).expect("utf-8");
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<r a=\"1\">t\n  <x>1</x>\n  <x>2</x>\n  <y>\n    <z/>\n  </y>\n</r>\n"
        );
        assert_eq!(convert(&xml), v);
    }

    #[test]
    fn json_to_xml_handles_very_deep_json_without_recursion() {
        let mut v = json!(null);
        for _ in 0..100_000 {
            let mut m = Map::new();
            m.insert("a".to_owned(), v);
            v = Value::Object(m);
        }
        let xml = json_to_xml(&v, &JsonToXmlOptions::default()).expect("deep");
        assert!(xml.ends_with(b"</a></a>"));
        // serde_json drops recursively; unwind it by hand so the test itself is safe.
        let mut cur = v;
        while let Value::Object(mut m) = cur {
            cur = m.remove("a").unwrap_or(Value::Null);
        }
    }
}
