//! Streaming XML ⇄ JSON codec, following the conventions of `DESIGN.md` ("XML ⇄ JSON
//! conventions") with xmltodict as the oracle for the default, string-valued mode.
//!
//! # Mapping (XML → JSON)
//! - The document becomes `{ "<root name>": <root value> }`.
//! - An attribute becomes `"@name"`; text beside attributes or children becomes `"#text"`.
//! - A text-only element becomes a plain string, an empty element (`<a/>`, `<a></a>`) becomes
//!   `null`, an element with only attributes becomes an object of attributes.
//! - Same-name siblings become an array in document order, also when other elements come
//!   between them; [`ArrayPaths`] force an array even for a single occurrence.
//! - CDATA is text; comments and processing instructions are dropped.
//! - Text pieces of one element are joined with nothing (like xmltodict) and the joined value is
//!   trimmed of leading and trailing XML whitespace (space, tab, CR, LF — not NBSP); a value that
//!   is then empty is dropped. Inside the value the text is kept as written. In mixed content
//!   the position of the text relative to the child elements is lost.
//! - Namespace prefixes stay in the names (`"soap:Envelope"`, `"@xmlns:soap"`) unless
//!   `strip_namespaces` is set.
//! - Values are strings unless `infer_types` is set.
//!
//! # Invariant
//! `xml_to_json` returns either the JSON of the whole, well-formed document or an error: never
//! partial JSON, never a panic, never any I/O. It is one pass over quick-xml events that builds
//! the `serde_json::Value` with a stack of frames (no intermediate DOM). Nothing is expanded
//! beyond the five predefined entities and character references: a DTD that declares entities
//! is refused, a DTD without them is skipped. Input size is checked before parsing and nesting
//! depth while parsing. `json_to_xml` is the inverse and is iterative, so no input can overflow
//! the stack.
//!
//! Positions in errors are byte offsets into the input (for input that is not UTF-8: into its
//! UTF-8 decoding) plus a 1-based line and column (column counted in characters).
//!
//! # Layout
//! One concern per file; this file holds the public API (options, errors, the two entry points).
//! - `decode`: BOM and XML-declaration sniffing, decoding other encodings to UTF-8.
//! - `to_json`: the converter, one pass over quick-xml events with a stack of open elements.
//! - `array_paths`: the "force an array here" paths and their matching.
//! - `dtd`: the syntax check of a DOCTYPE that refuses entity declarations.
//! - `text`: references, line-end and attribute-value normalisation, type inference.
//! - `chars`: the XML 1.0 character, whitespace and name productions.
//! - `to_xml`: the iterative JSON → XML writer.

use std::fmt;

use serde_json::Value;

mod array_paths;
mod chars;
mod decode;
mod dtd;
mod text;
mod to_json;
mod to_xml;

pub use array_paths::ArrayPaths;

use decode::{Source, decode_document};
use to_json::Converter;

/// Default for [`XmlToJsonOptions::max_depth`].
pub const DEFAULT_MAX_DEPTH: usize = 128;
/// Default for [`XmlToJsonOptions::max_bytes`]: 64 MiB.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Hard ceiling on nesting whatever `max_depth` says: dropping and serialising a
/// `serde_json::Value` recurse once per level, so a deeper value could overflow a worker stack.
const DEPTH_CEILING: usize = 4096;

/// Options of [`xml_to_json`].
#[derive(Debug, Clone)]
pub struct XmlToJsonOptions {
    /// Element paths that always become arrays, even with a single occurrence.
    pub arrays: ArrayPaths,
    /// Remove namespace prefixes from element and attribute names and drop `xmlns`
    /// declarations.
    pub strip_namespaces: bool,
    /// Turn text that looks like a JSON number (`-12`, `3.5`, `1e3`, but not `007` or `+1`) or
    /// `true`/`false` into numbers and booleans; attributes too.
    pub infer_types: bool,
    /// Maximum element nesting (default 128, never more than 4096).
    pub max_depth: usize,
    /// Maximum input size in bytes, checked before parsing (default 64 MiB).
    pub max_bytes: usize,
}

impl Default for XmlToJsonOptions {
    fn default() -> Self {
        Self {
            arrays: ArrayPaths::default(),
            strip_namespaces: false,
            infer_types: false,
            max_depth: DEFAULT_MAX_DEPTH,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// Options of [`json_to_xml`].
#[derive(Debug, Clone)]
pub struct JsonToXmlOptions {
    /// Name of a root element to wrap the JSON in. When set, the JSON always goes inside it
    /// (`{"id": 1}` with root `order` gives `<order><id>1</id></order>`). `None`: the JSON must
    /// be an object with exactly one element key, which becomes the root; other JSON is an error.
    pub root: Option<String>,
    /// Start with `<?xml version="1.0" encoding="UTF-8"?>` (default true).
    pub declaration: bool,
    /// Indent nested elements by this many spaces; `None` writes compact XML.
    pub indent: Option<usize>,
}

impl Default for JsonToXmlOptions {
    fn default() -> Self {
        Self {
            root: None,
            declaration: true,
            indent: None,
        }
    }
}

/// A place in the XML input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Byte offset in the input (for input that is not UTF-8: in its UTF-8 decoding).
    pub offset: u64,
    /// 1-based line.
    pub line: u64,
    /// 1-based column, in characters.
    pub column: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {} (byte {})",
            self.line, self.column, self.offset
        )
    }
}

/// Sizes in errors: whole megabytes read better in an operator's log than byte counts.
struct Size(usize);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MB: usize = 1024 * 1024;
        if self.0 >= MB && self.0.is_multiple_of(MB) {
            write!(f, "{} MB", self.0 / MB)
        } else if self.0 >= MB {
            write!(f, "{:.1} MB", self.0 as f64 / MB as f64)
        } else {
            write!(f, "{} bytes", self.0)
        }
    }
}

/// Errors of both directions. Every message says what is wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    /// The input is larger than `max_bytes`; nothing was parsed.
    #[error("input is {}, over the {} limit", Size(*size), Size(*limit))]
    TooLarge { size: usize, limit: usize },
    /// The document is not well-formed XML.
    #[error("malformed XML at {at}: {message}")]
    Malformed { at: Position, message: String },
    /// Elements nest deeper than `max_depth`.
    #[error("XML nesting deeper than {limit} at {at}")]
    TooDeep { limit: usize, at: Position },
    /// The DTD declares entities: refused by policy, nothing is expanded.
    #[error("DTD entity declarations are refused (no DTD processing) at {at}")]
    DtdEntity { at: Position },
    /// A reference to an entity other than the five predefined ones (or to a parameter
    /// entity).
    #[error(
        "undeclared entity `{reference}` at {at}: only `&lt;` `&gt;` `&amp;` `&apos;` `&quot;` \
         and character references are expanded (no DTD processing)"
    )]
    UndeclaredEntity { reference: String, at: Position },
    /// A UTF-8 document (declared, by BOM, or by default) contains bytes that are not UTF-8.
    #[error("invalid UTF-8 at {at}: the document is UTF-8 by its declaration, BOM or default")]
    InvalidUtf8 { at: Position },
    /// A document in another encoding contains bytes that are not valid in it.
    #[error("invalid {encoding} byte sequence near byte {offset} of the input")]
    InvalidEncoding {
        encoding: &'static str,
        offset: usize,
    },
    /// The declared or detected encoding cannot be decoded.
    #[error("unsupported encoding `{encoding}`: {reason}")]
    UnsupportedEncoding { encoding: String, reason: String },
    /// json_to_xml: a key cannot be an XML element name.
    #[error("cannot make an XML element name from key `{key}` at {path}")]
    InvalidElementName { key: String, path: String },
    /// json_to_xml: an `@` key cannot be an XML attribute name.
    #[error("cannot make an XML attribute name from key `{key}` at {path}")]
    InvalidAttributeName { key: String, path: String },
    /// json_to_xml: a value has no XML form under these conventions.
    #[error("cannot convert the JSON value at {path} to XML: {reason}")]
    Unrepresentable { path: String, reason: String },
    /// json_to_xml: the JSON needs a wrapping root element and none was configured.
    #[error("the JSON {reason}, so XML needs a wrapping root element: set `root`")]
    RootNeeded { reason: &'static str },
}

impl XmlError {
    /// True for refusals that come from the "no DTD processing" policy (entity declarations,
    /// references to entities a DTD would have declared) rather than from broken XML.
    pub fn is_dtd_policy(&self) -> bool {
        matches!(
            self,
            XmlError::DtdEntity { .. } | XmlError::UndeclaredEntity { .. }
        )
    }
}

/// Converts an XML document to JSON following the module's conventions.
pub fn xml_to_json(input: &[u8], opts: &XmlToJsonOptions) -> Result<Value, XmlError> {
    if input.len() > opts.max_bytes {
        return Err(XmlError::TooLarge {
            size: input.len(),
            limit: opts.max_bytes,
        });
    }
    match decode_document(input)? {
        Source::Utf8 { bytes, bom } => Converter::new(bytes, bom as u64, opts).run(),
        Source::Transcoded(text) => Converter::new(text.as_bytes(), 0, opts).run(),
    }
}

/// Converts JSON to XML, inverting [`xml_to_json`]: `@x` → attribute, `#text` → text, arrays →
/// repeated elements, null → empty element, numbers and booleans → their text.
pub fn json_to_xml(value: &Value, opts: &JsonToXmlOptions) -> Result<Vec<u8>, XmlError> {
    to_xml::write(value, opts)
}

/// Helpers shared by the unit tests of the files in this folder.
#[cfg(test)]
mod test_support {
    use serde_json::Value;

    use super::{XmlToJsonOptions, xml_to_json};

    pub(super) fn convert(xml: &str) -> Value {
        xml_to_json(xml.as_bytes(), &XmlToJsonOptions::default()).expect("converts")
    }

    pub(super) fn convert_with(xml: &str, opts: &XmlToJsonOptions) -> Value {
        xml_to_json(xml.as_bytes(), opts).expect("converts")
    }

    pub(super) fn error(xml: &[u8]) -> String {
        xml_to_json(xml, &XmlToJsonOptions::default())
            .expect_err("refused")
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::error;
    use super::*;

    #[test]
    fn nesting_and_size_limits_are_enforced() {
        let deep = "<a>".repeat(129) + "</a>".repeat(129).as_str();
        let e = error(deep.as_bytes());
        assert!(
            e.starts_with("XML nesting deeper than 128 at line 1, column 385"),
            "{e}"
        );
        let opts = XmlToJsonOptions {
            max_bytes: 10,
            ..XmlToJsonOptions::default()
        };
        let e = xml_to_json(b"<a>0123456789</a>", &opts)
            .expect_err("too big")
            .to_string();
        assert_eq!(e, "input is 17 bytes, over the 10 bytes limit");
        let e = XmlError::TooLarge {
            size: 70 * 1024 * 1024,
            limit: DEFAULT_MAX_BYTES,
        };
        assert_eq!(e.to_string(), "input is 70 MB, over the 64 MB limit");
    }

    #[test]
    fn truncated_and_mutated_inputs_never_panic() {
        let doc = "\u{FEFF}<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE r [<!ELEMENT r ANY>\
                   <!ATTLIST r a CDATA #IMPLIED>]><?pi x?><!--c--><r xmlns:p=\"urn:p\" a='1&amp;'>\
                   <p:x p:b=\"&#x41;\">t&lt;<![CDATA[d]]></p:x><y/>tail</r>";
        let bytes = doc.as_bytes();
        let opts = XmlToJsonOptions {
            infer_types: true,
            strip_namespaces: true,
            arrays: ArrayPaths::parse(&["$..x".to_owned()]).expect("path"),
            ..XmlToJsonOptions::default()
        };
        assert!(xml_to_json(bytes, &opts).is_ok());
        for end in 0..bytes.len() {
            let _ = xml_to_json(&bytes[..end], &opts);
        }
        for i in 0..bytes.len() {
            for b in [
                b'<', b'>', b'&', b'"', b'\'', b'/', b'!', b'?', b']', 0, 0xFF, b' ',
            ] {
                let mut mutated = bytes.to_vec();
                mutated[i] = b;
                let _ = xml_to_json(&mutated, &opts);
            }
        }
        for input in [
            &b"<?xm?>"[..],
            b"<?xml",
            b"\xFF\xFE",
            b"\xFE\xFF<",
            b"<\x00?\x00",
            b"<",
        ] {
            assert!(xml_to_json(input, &opts).is_err());
        }
    }
}
