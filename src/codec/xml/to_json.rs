//! The XML → JSON converter: one pass over quick-xml events that builds the
//! `serde_json::Value` with a stack of open-element frames, no intermediate DOM. It does the
//! well-formedness checks quick-xml leaves to its caller (attribute syntax and duplicates,
//! names, Namespaces in XML 1.0, processing instructions, where the declaration and DOCTYPE may
//! stand, a single root) and turns byte offsets into lines and columns for errors.
//!
//! Invariant: `run` returns the JSON of the whole document or the first error with its
//! position, never partial JSON; the open-element stack never grows past `max_depth`, itself
//! capped at `DEPTH_CEILING`. Its input is UTF-8 (see `decode`).

use std::borrow::Cow;
use std::collections::HashSet;

use quick_xml::Reader;
use quick_xml::events::{BytesRef, BytesStart, Event};
use serde_json::map::Entry;
use serde_json::{Map, Value};

use super::chars::{first_illegal_char, is_xml_name, is_xml_space, is_xml_space_byte};
use super::decode::parse_decl;
use super::dtd::{DtdProblem, check_doctype};
use super::text::{
    Problem, Resolved, append_text, infer_type, normalize_attr_value, resolve_reference,
    trim_end_cow,
};
use super::{DEPTH_CEILING, Position, XmlError, XmlToJsonOptions};

/// One open element.
struct Frame<'a> {
    /// JSON key: the element name, without prefix when stripping namespaces.
    key: String,
    /// Attributes and children so far.
    map: Map<String, Value>,
    /// Text so far, leading whitespace skipped; borrowed from the input while it is one piece.
    text: Cow<'a, str>,
    /// Forced into an array by `ArrayPaths`.
    forced: bool,
    /// Offset of the `<` of the start tag, for "never closed" errors.
    start: u64,
    /// Namespace bindings in scope before this element.
    ns_len: usize,
}

/// A namespace declaration in scope.
struct NsBinding {
    prefix: String,
    uri: String,
}

/// Where an attribute's name and raw value lie inside the attribute string of a start tag.
struct AttrSpan {
    name: (usize, usize),
    value: (usize, usize),
}

const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";
const XMLNS_NS: &str = "http://www.w3.org/2000/xmlns/";

/// The state of one conversion: the open elements, the namespaces in scope, the finished root.
pub(super) struct Converter<'a, 'o> {
    /// UTF-8 document, BOM removed.
    src: &'a [u8],
    /// Bytes before `src` in the input (BOM), added to offsets in errors.
    base: u64,
    opts: &'o XmlToJsonOptions,
    max_depth: usize,
    stack: Vec<Frame<'a>>,
    /// Holds the root element once it is closed.
    doc: Map<String, Value>,
    root_closed: bool,
    seen_doctype: bool,
    seen_event: bool,
    ns: Vec<NsBinding>,
    /// Reused for every start tag.
    attrs: Vec<AttrSpan>,
}

impl<'a, 'o> Converter<'a, 'o> {
    pub(super) fn new(src: &'a [u8], base: u64, opts: &'o XmlToJsonOptions) -> Self {
        Self {
            src,
            base,
            opts,
            max_depth: opts.max_depth.min(DEPTH_CEILING),
            stack: Vec::new(),
            doc: Map::new(),
            root_closed: false,
            seen_doctype: false,
            seen_event: false,
            ns: Vec::new(),
            attrs: Vec::new(),
        }
    }

    fn position(&self, offset: u64) -> Position {
        let end = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.src.len());
        let before = &self.src[..end];
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let line = before.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        // Count characters, not bytes: UTF-8 continuation bytes do not start a character.
        let column = before[line_start..]
            .iter()
            .filter(|&&b| (b & 0xC0) != 0x80)
            .count() as u64
            + 1;
        Position {
            offset: offset + self.base,
            line,
            column,
        }
    }

    fn malformed(&self, offset: u64, message: impl Into<String>) -> XmlError {
        XmlError::Malformed {
            at: self.position(offset),
            message: message.into(),
        }
    }

    fn problem(&self, offset: u64, problem: Problem) -> XmlError {
        match problem {
            Problem::Malformed(message) => self.malformed(offset, message),
            Problem::Undeclared(reference) => XmlError::UndeclaredEntity {
                reference,
                at: self.position(offset),
            },
        }
    }

    /// Offset of `part` in the document when it borrows from it (events do), else `fallback`.
    fn offset_of(&self, part: &str, fallback: u64) -> u64 {
        let start = self.src.as_ptr() as usize;
        let at = part.as_ptr() as usize;
        if at >= start && at + part.len() <= start + self.src.len() {
            (at - start) as u64
        } else {
            fallback
        }
    }

    pub(super) fn run(mut self) -> Result<Value, XmlError> {
        // Characters XML forbids anywhere (C0 controls, U+FFFE, U+FFFF) are found in one pass
        // up front, cheaper than checking each text, name, comment and attribute separately.
        if let Some((at, code)) = first_illegal_char(self.src) {
            return Err(self.malformed(
                at as u64,
                format!("character U+{code:04X} is not allowed in XML"),
            ));
        }
        let mut reader = Reader::from_reader(self.src);
        let config = reader.config_mut();
        config.check_comments = true;
        config.check_end_names = true;
        loop {
            let start = reader.buffer_position();
            let event = match reader.read_event() {
                Ok(event) => event,
                Err(e) => return Err(self.parse_error(e, reader.error_position())),
            };
            let first = !self.seen_event;
            self.seen_event = true;
            match event {
                Event::Start(e) => self.start(&e, start, false)?,
                Event::Empty(e) => self.start(&e, start, true)?,
                Event::End(_) => self.end(),
                Event::Text(t) => self.text(t.into_inner(), start, false)?,
                Event::CData(t) => self.text(t.into_inner(), start, true)?,
                Event::GeneralRef(r) => self.reference(&r, start)?,
                Event::Comment(_) => {}
                Event::PI(pi) => {
                    let target = pi.target();
                    if target.eq_ignore_ascii_case("xml") {
                        return Err(self.malformed(
                            start,
                            "the XML declaration is only allowed at the very start",
                        ));
                    }
                    if !is_xml_name(target) || target.contains(':') {
                        return Err(self.malformed(
                            start,
                            format!("invalid processing instruction target `{target}`"),
                        ));
                    }
                    if !pi.content().is_empty() && !pi.content().starts_with(is_xml_space) {
                        return Err(self.malformed(
                            start,
                            "space required after the processing instruction target",
                        ));
                    }
                }
                Event::Decl(decl) => {
                    if !first || start != 0 {
                        return Err(self.malformed(
                            start,
                            "the XML declaration is only allowed at the very start",
                        ));
                    }
                    if let Err(message) = parse_decl(&decl[3..]) {
                        return Err(self.malformed(start, message));
                    }
                }
                Event::DocType(d) => self.doctype(&d, start)?,
                Event::Eof => break,
            }
        }
        if let Some(frame) = self.stack.last() {
            return Err(self.malformed(
                self.src.len() as u64,
                format!(
                    "element `{}` opened at {} is never closed",
                    frame.key,
                    self.position(frame.start)
                ),
            ));
        }
        if !self.root_closed {
            return Err(self.malformed(self.src.len() as u64, "no root element"));
        }
        Ok(Value::Object(self.doc))
    }

    fn parse_error(&self, error: quick_xml::Error, offset: u64) -> XmlError {
        use quick_xml::errors::{Error, IllFormedError};
        match error {
            Error::Encoding(_) => {
                let at = std::str::from_utf8(self.src)
                    .err()
                    .map_or(offset, |e| e.valid_up_to() as u64);
                XmlError::InvalidUtf8 {
                    at: self.position(at),
                }
            }
            Error::IllFormed(IllFormedError::MismatchedEndTag { expected, found }) => self
                .malformed(
                    offset,
                    format!("expected `</{expected}>`, found `</{found}>`"),
                ),
            Error::IllFormed(IllFormedError::UnmatchedEndTag(name)) => {
                self.malformed(offset, format!("end tag `</{name}>` without a start tag"))
            }
            other => self.malformed(offset, other.to_string()),
        }
    }

    fn doctype(&mut self, content: &str, start: u64) -> Result<(), XmlError> {
        if self.seen_doctype {
            return Err(self.malformed(start, "a second DOCTYPE declaration"));
        }
        if !self.stack.is_empty() || self.root_closed {
            return Err(self.malformed(start, "DOCTYPE after the root element started"));
        }
        self.seen_doctype = true;
        let at = self.offset_of(content, start + 9);
        let head = self
            .src
            .get(start as usize..at as usize)
            .unwrap_or_default();
        if !head.starts_with(b"<!DOCTYPE") || head.len() == 9 {
            return Err(self.malformed(
                start,
                "expected `<!DOCTYPE` (upper case) followed by whitespace",
            ));
        }
        check_doctype(content).map_err(|(i, problem)| match problem {
            DtdProblem::Entity => XmlError::DtdEntity {
                at: self.position(at + i as u64),
            },
            DtdProblem::Other(p) => self.problem(at + i as u64, p),
        })
    }

    fn start(&mut self, e: &BytesStart<'_>, start: u64, empty: bool) -> Result<(), XmlError> {
        if self.root_closed {
            return Err(self.malformed(start, "a second root element (only one is allowed)"));
        }
        if self.stack.len() >= self.max_depth {
            return Err(XmlError::TooDeep {
                limit: self.max_depth,
                at: self.position(start),
            });
        }
        let name_q = e.name();
        let name = name_q.as_ref();
        if !is_xml_name(name) {
            return Err(self.malformed(start + 1, format!("invalid element name `{name}`")));
        }
        let raw = e.attributes_raw();
        let raw_at = self.offset_of(raw, start);
        self.scan_attributes(raw, raw_at)?;
        let ns_len = self.ns.len();
        let has_xmlns = self
            .attrs
            .iter()
            .any(|a| raw[a.name.0..a.name.1].starts_with("xmlns"));
        if has_xmlns
            || name.contains(':')
            || self
                .attrs
                .iter()
                .any(|a| raw[a.name.0..a.name.1].contains(':'))
        {
            self.check_namespaces(name, raw, raw_at, start)?;
        }
        let key = self.output_name(name).to_owned();
        let mut map = Map::new();
        for span in &self.attrs {
            let attr_name = &raw[span.name.0..span.name.1];
            if self.opts.strip_namespaces
                && (attr_name == "xmlns" || attr_name.starts_with("xmlns:"))
            {
                continue;
            }
            let value = normalize_attr_value(&raw[span.value.0..span.value.1])
                .map_err(|(i, p)| self.problem(raw_at + (span.value.0 + i) as u64, p))?;
            let mut attr_key = String::with_capacity(attr_name.len() + 1);
            attr_key.push('@');
            attr_key.push_str(self.output_name(attr_name));
            let value = self.scalar(value);
            // Raw names are unique (checked above), so only stripping prefixes can collide
            // (`a:id`, `b:id`): the later one keeps its full name instead of being lost.
            if self.opts.strip_namespaces && map.contains_key(&attr_key) {
                attr_key.truncate(1);
                attr_key.push_str(attr_name);
            }
            map.insert(attr_key, value);
        }
        // The element's path: the keys of the open elements, root first, then its own key.
        let stack = &self.stack;
        let name_at = |i: usize| -> &str {
            match stack.get(i) {
                Some(frame) => &frame.key,
                None => &key,
            }
        };
        let forced =
            !self.opts.arrays.is_empty() && self.opts.arrays.matches(stack.len() + 1, name_at);
        if empty {
            self.ns.truncate(ns_len);
            let value = if map.is_empty() {
                Value::Null
            } else {
                Value::Object(map)
            };
            self.attach(key, value, forced);
        } else {
            self.stack.push(Frame {
                key,
                map,
                text: Cow::Borrowed(""),
                forced,
                start,
                ns_len,
            });
        }
        Ok(())
    }

    fn output_name<'n>(&self, name: &'n str) -> &'n str {
        if self.opts.strip_namespaces {
            name.rsplit(':').next().unwrap_or(name)
        } else {
            name
        }
    }

    /// Splits the attribute string of a start tag into `self.attrs`, checking the syntax
    /// (whitespace between attributes, `=`, quotes), names, `<` in values and duplicates.
    fn scan_attributes(&mut self, raw: &str, raw_at: u64) -> Result<(), XmlError> {
        self.attrs.clear();
        let bytes = raw.as_bytes();
        let mut i = 0;
        loop {
            let before_space = i;
            while i < bytes.len() && is_xml_space_byte(bytes[i]) {
                i += 1;
            }
            if i == bytes.len() {
                break;
            }
            if i == before_space {
                return Err(
                    self.malformed(raw_at + i as u64, "whitespace required before an attribute")
                );
            }
            let name_start = i;
            while i < bytes.len() && !is_xml_space_byte(bytes[i]) && bytes[i] != b'=' {
                i += 1;
            }
            let name = &raw[name_start..i];
            if !is_xml_name(name) {
                return Err(self.malformed(
                    raw_at + name_start as u64,
                    format!("invalid attribute name `{name}`"),
                ));
            }
            while i < bytes.len() && is_xml_space_byte(bytes[i]) {
                i += 1;
            }
            if bytes.get(i) != Some(&b'=') {
                return Err(self.malformed(
                    raw_at + i as u64,
                    format!("expected `=` after attribute `{name}`"),
                ));
            }
            i += 1;
            while i < bytes.len() && is_xml_space_byte(bytes[i]) {
                i += 1;
            }
            let quote = match bytes.get(i) {
                Some(&q @ (b'"' | b'\'')) => q,
                _ => {
                    return Err(self.malformed(
                        raw_at + i as u64,
                        format!("the value of attribute `{name}` must be quoted"),
                    ));
                }
            };
            let value_start = i + 1;
            let Some(len) = bytes[value_start..].iter().position(|&b| b == quote) else {
                return Err(self.malformed(
                    raw_at + i as u64,
                    format!("unclosed value of attribute `{name}`"),
                ));
            };
            i = value_start + len + 1;
            self.attrs.push(AttrSpan {
                name: (name_start, name_start + (name.len())),
                value: (value_start, value_start + len),
            });
        }
        // Duplicates: a linear scan for the usual handful, a set for hostile attribute lists.
        let n = self.attrs.len();
        let name_of = |a: &AttrSpan| &raw[a.name.0..a.name.1];
        let duplicate = if n <= 16 {
            (1..n).find(|&j| (0..j).any(|k| name_of(&self.attrs[k]) == name_of(&self.attrs[j])))
        } else {
            let mut seen = HashSet::with_capacity(n);
            (0..n).find(|&j| !seen.insert(name_of(&self.attrs[j])))
        };
        if let Some(j) = duplicate {
            let span = &self.attrs[j];
            return Err(self.malformed(
                raw_at + span.name.0 as u64,
                format!("duplicate attribute `{}`", name_of(span)),
            ));
        }
        Ok(())
    }

    /// Namespaces in XML 1.0: declarations are well-formed, every prefix used is bound, and no
    /// two attributes share an expanded name. Only runs for tags that use a colon or `xmlns`.
    fn check_namespaces(
        &mut self,
        name: &str,
        raw: &str,
        raw_at: u64,
        start: u64,
    ) -> Result<(), XmlError> {
        for span in &self.attrs {
            let attr = &raw[span.name.0..span.name.1];
            let at = raw_at + span.name.0 as u64;
            let prefix = if attr == "xmlns" {
                None
            } else if let Some(p) = attr.strip_prefix("xmlns:") {
                Some(p)
            } else {
                continue;
            };
            let value = normalize_attr_value(&raw[span.value.0..span.value.1])
                .map_err(|(i, p)| self.problem(raw_at + (span.value.0 + i) as u64, p))?;
            let value = value.as_ref();
            let bad = match prefix {
                None => (value == XML_NS || value == XMLNS_NS)
                    .then_some("the default namespace cannot be the xml or xmlns namespace"),
                Some("xmlns") => Some("the `xmlns` prefix cannot be declared"),
                Some("xml") => (value != XML_NS).then_some("the `xml` prefix cannot be rebound"),
                Some(p) if p.contains(':') || p.is_empty() => Some("invalid namespace prefix"),
                Some(_) if value.is_empty() => {
                    Some("a prefix cannot be undeclared (empty namespace) in XML 1.0")
                }
                Some(_) if value == XML_NS || value == XMLNS_NS => {
                    Some("the xml and xmlns namespaces cannot be bound to another prefix")
                }
                Some(_) => None,
            };
            if let Some(why) = bad {
                return Err(self.malformed(at, why));
            }
            if let Some(prefix) = prefix {
                self.ns.push(NsBinding {
                    prefix: prefix.to_owned(),
                    uri: value.to_owned(),
                });
            }
        }
        self.resolve_prefix(name, start + 1)?;
        let mut expanded: Vec<(&str, &str)> = Vec::new();
        for span in &self.attrs {
            let attr = &raw[span.name.0..span.name.1];
            if attr == "xmlns" || attr.starts_with("xmlns:") || !attr.contains(':') {
                continue;
            }
            let at = raw_at + span.name.0 as u64;
            let uri = self.resolve_prefix(attr, at)?;
            let local = attr.rsplit(':').next().unwrap_or(attr);
            if expanded.contains(&(uri, local)) {
                return Err(self.malformed(
                    at,
                    format!("attribute `{attr}` repeats another attribute's namespace and name"),
                ));
            }
            expanded.push((uri, local));
        }
        Ok(())
    }

    /// URI of the prefix of a qualified name (`""` when it has none).
    fn resolve_prefix(&self, qname: &str, at: u64) -> Result<&str, XmlError> {
        let Some((prefix, local)) = qname.split_once(':') else {
            return Ok("");
        };
        if prefix.is_empty() || local.is_empty() || local.contains(':') {
            return Err(self.malformed(at, format!("`{qname}` is not a valid qualified name")));
        }
        if prefix == "xml" {
            return Ok(XML_NS);
        }
        match self.ns.iter().rev().find(|b| b.prefix == prefix) {
            Some(binding) => Ok(&binding.uri),
            None => Err(self.malformed(at, format!("namespace prefix `{prefix}` is not declared"))),
        }
    }

    fn end(&mut self) {
        // quick-xml has already checked that the end tag matches the open element.
        let Some(frame) = self.stack.pop() else {
            return;
        };
        self.ns.truncate(frame.ns_len);
        let text = trim_end_cow(frame.text);
        let mut map = frame.map;
        let value = if map.is_empty() {
            if text.is_empty() {
                Value::Null
            } else {
                self.scalar(text)
            }
        } else {
            if !text.is_empty() {
                map.insert("#text".to_owned(), self.scalar(text));
            }
            Value::Object(map)
        };
        self.attach(frame.key, value, frame.forced);
    }

    /// Puts a finished element into its parent (or the document): a second value under the
    /// same key turns it into an array. Element values are never arrays themselves, so an
    /// array under a key always means "repeated" or "forced".
    fn attach(&mut self, key: String, value: Value, forced: bool) {
        let map = match self.stack.last_mut() {
            Some(parent) => &mut parent.map,
            None => {
                self.root_closed = true;
                &mut self.doc
            }
        };
        match map.entry(key) {
            Entry::Vacant(slot) => {
                slot.insert(if forced {
                    Value::Array(vec![value])
                } else {
                    value
                });
            }
            Entry::Occupied(mut slot) => match slot.get_mut() {
                Value::Array(items) => items.push(value),
                other => {
                    let first = std::mem::take(other);
                    *other = Value::Array(vec![first, value]);
                }
            },
        }
    }

    fn scalar(&self, text: Cow<'_, str>) -> Value {
        if self.opts.infer_types
            && let Some(v) = infer_type(&text)
        {
            return v;
        }
        Value::String(text.into_owned())
    }

    fn text(&mut self, raw: Cow<'a, str>, start: u64, cdata: bool) -> Result<(), XmlError> {
        let Some(frame) = self.stack.last_mut() else {
            if cdata || !raw.bytes().all(is_xml_space_byte) {
                let what = if self.root_closed { "after" } else { "before" };
                return Err(self.malformed(start, format!("text {what} the root element")));
            }
            return Ok(());
        };
        if !cdata && let Some(i) = raw.find("]]>") {
            return Err(self.malformed(start + i as u64, "`]]>` is not allowed in text"));
        }
        append_text(&mut frame.text, raw);
        Ok(())
    }

    fn reference(&mut self, r: &BytesRef<'_>, start: u64) -> Result<(), XmlError> {
        if self.stack.is_empty() {
            return Err(self.malformed(start, "entity reference outside the root element"));
        }
        let resolved = resolve_reference(r).map_err(|p| self.problem(start, p))?;
        if let Some(frame) = self.stack.last_mut() {
            let mut buf = [0u8; 4];
            let piece = match resolved {
                Resolved::Char(c) => &*c.encode_utf8(&mut buf),
                Resolved::Str(s) => s,
            };
            // `&#32;` at the start is whitespace like any other and is trimmed.
            if !(frame.text.is_empty() && piece.bytes().all(is_xml_space_byte)) {
                frame.text.to_mut().push_str(piece);
            }
        }
        Ok(())
    }
}
#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::XmlToJsonOptions;
    use super::super::test_support::{convert, convert_with, error};

    #[test]
    fn attributes_text_and_children_follow_xmltodict() {
        let v = convert(
            r#"<order id="7" kind="web"><customer>Ann</customer>note<total currency="EUR">12.50</total></order>"#,
        );
        assert_eq!(
            v,
            json!({"order": {"@id": "7", "@kind": "web", "customer": "Ann",
                   "total": {"@currency": "EUR", "#text": "12.50"}, "#text": "note"}})
        );
    }

    #[test]
    fn empty_elements_are_null_and_attribute_only_elements_are_objects() {
        let v = convert(r#"<a><url/><b></b><c x="1"/><d>  </d></a>"#);
        assert_eq!(
            v,
            json!({"a": {"url": null, "b": null, "c": {"@x": "1"}, "d": null}})
        );
    }

    #[test]
    fn repeated_siblings_become_arrays_in_document_order_even_when_not_adjacent() {
        let v = convert("<r><a>1</a><b>x</b><a>2</a><a>3</a></r>");
        assert_eq!(v, json!({"r": {"a": ["1", "2", "3"], "b": "x"}}));
    }

    #[test]
    fn cdata_is_merged_into_text_and_comments_and_pis_are_dropped() {
        let v = convert("<a><!-- c --><?pi x?>one <![CDATA[<two> & ]]>three</a>");
        assert_eq!(v, json!({"a": "one <two> & three"}));
    }

    #[test]
    fn namespace_prefixes_are_kept_by_default() {
        let xml = r#"<soap:Envelope xmlns:soap="urn:s"><soap:Body><m:r xmlns:m="urn:m" m:id="1"/></soap:Body></soap:Envelope>"#;
        let v = convert(xml);
        assert_eq!(
            v,
            json!({"soap:Envelope": {"@xmlns:soap": "urn:s",
                   "soap:Body": {"m:r": {"@xmlns:m": "urn:m", "@m:id": "1"}}}})
        );
    }

    #[test]
    fn strip_namespaces_removes_prefixes_and_declarations() {
        let xml = r#"<soap:Envelope xmlns:soap="urn:s" xmlns="urn:d"><soap:Body><m:r xmlns:m="urn:m" m:id="1" xml:lang="en"/></soap:Body></soap:Envelope>"#;
        let opts = XmlToJsonOptions {
            strip_namespaces: true,
            ..XmlToJsonOptions::default()
        };
        let v = convert_with(xml, &opts);
        assert_eq!(
            v,
            json!({"Envelope": {"Body": {"r": {"@id": "1", "@lang": "en"}}}})
        );
    }

    #[test]
    fn strip_namespaces_keeps_colliding_attributes_under_their_full_name() {
        let xml = r#"<r xmlns:a="urn:a" xmlns:b="urn:b" a:id="1" b:id="2"/>"#;
        let opts = XmlToJsonOptions {
            strip_namespaces: true,
            ..XmlToJsonOptions::default()
        };
        assert_eq!(
            convert_with(xml, &opts),
            json!({"r": {"@id": "1", "@b:id": "2"}})
        );
    }

    #[test]
    fn unbound_prefixes_are_refused() {
        assert!(error(b"<a:b/>").contains("prefix `a` is not declared"));
        assert!(error(br#"<r x:y="1"/>"#).contains("prefix `x` is not declared"));
    }

    #[test]
    fn malformed_xml_errors_name_line_and_column() {
        let e = error(b"<order>\n  <id>1</id>\n  <x></orde>");
        assert_eq!(
            e,
            "malformed XML at line 3, column 6 (byte 26): expected `</x>`, found `</orde>`"
        );
        let e = error(b"<a><b></b>");
        assert!(
            e.contains("element `a` opened at line 1, column 1 (byte 0) is never closed"),
            "{e}"
        );
        assert!(error(b"<a/><b/>").contains("second root element"));
        assert!(error(b"<a/>junk").contains("text after the root element"));
        assert!(error(b"").contains("no root element"));
        assert!(error(b"<a b='1' b='2'/>").contains("duplicate attribute `b`"));
        assert!(error(b"<a b='<'/>").contains("`<` is not allowed"));
        assert!(error(b"<a>x & y</a>").starts_with("malformed XML"));
        assert!(error(b"<a>]]></a>").contains("`]]>` is not allowed"));
        assert!(error(b"<a>\x01</a>").contains("U+0001"));
        assert!(error(b"<1a/>").contains("invalid element name `1a`"));
        assert!(error(b"<a b='1'c='2'/>").contains("whitespace required"));
        assert!(error(b"<a>&#0;</a>").contains("not a valid character reference"));
    }
}
