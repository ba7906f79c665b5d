//! Which encoding an XML document is in (XML 1.0 appendix F: byte order mark, then the
//! `encoding` of the XML declaration, then UTF-8 by default) and its decoding to UTF-8; also
//! the syntax check of the XML declaration, which the converter reuses.
//!
//! Invariant: the converter gets either the input itself (UTF-8 by BOM, declaration or
//! default: not copied, and left to the parser to validate so invalid UTF-8 is reported with
//! its line and column) or the whole input decoded to UTF-8. An encoding that cannot be decoded
//! safely (EBCDIC, WHATWG `replacement`, a UTF-16 label on ASCII-compatible bytes) is an
//! error, never a guess.

use quick_xml::encoding::DetectedEncoding;
use quick_xml::events::BytesStart;

use super::chars::is_xml_space;
use super::{Position, XmlError};

pub(super) enum Source<'a> {
    /// UTF-8 input, parsed in place; `bom` bytes were skipped at the start.
    Utf8 { bytes: &'a [u8], bom: usize },
    /// Input in another encoding, decoded to UTF-8 up front.
    Transcoded(String),
}

/// Decides the encoding from the BOM or the XML declaration (XML 1.0 appendix F) and decodes
/// to UTF-8. UTF-8 input is not copied; other encodings are decoded in one go, which is simpler
/// and faster than decoding while parsing since the whole document is in memory anyway.
pub(super) fn decode_document(input: &[u8]) -> Result<Source<'_>, XmlError> {
    let detected = quick_xml::encoding::detect_encoding(input);
    let (encoding, bom) = match detected {
        Some(DetectedEncoding::Utf8Bom) => {
            return Ok(Source::Utf8 {
                bytes: &input[3..],
                bom: 3,
            });
        }
        Some(d @ (DetectedEncoding::Utf16LeBom | DetectedEncoding::Utf16BeBom)) => {
            (d.encoding(), d.bom_len())
        }
        Some(d @ (DetectedEncoding::Utf16LeLike | DetectedEncoding::Utf16BeLike)) => {
            (d.encoding(), 0)
        }
        Some(DetectedEncoding::AsciiCompatible) => {
            let Some(label) = declared_encoding(input)? else {
                return Ok(Source::Utf8 {
                    bytes: input,
                    bom: 0,
                });
            };
            if label.eq_ignore_ascii_case("utf-8") || label.eq_ignore_ascii_case("utf8") {
                return Ok(Source::Utf8 {
                    bytes: input,
                    bom: 0,
                });
            }
            let decl = quick_xml::events::BytesDecl::from_start(BytesStart::from_content(
                format!(" encoding=\"{label}\""),
                0,
            ));
            let Some(encoding) = decl.encoder() else {
                return Err(XmlError::UnsupportedEncoding {
                    encoding: label.to_owned(),
                    reason: "not a known character encoding (UTF-8, UTF-16, ISO-8859-x, \
                             windows-125x, Shift_JIS, EUC-JP, ISO-2022-JP, GBK, Big5, EUC-KR, \
                             KOI8 … are supported)"
                        .to_owned(),
                });
            };
            if encoding.name().starts_with("UTF-16") {
                return Err(XmlError::UnsupportedEncoding {
                    encoding: label.to_owned(),
                    reason: "the declaration says UTF-16 but the bytes are ASCII-compatible \
                             and there is no byte order mark"
                        .to_owned(),
                });
            }
            if encoding.name() == "replacement" {
                return Err(XmlError::UnsupportedEncoding {
                    encoding: label.to_owned(),
                    reason: "this encoding is unsafe and cannot be decoded".to_owned(),
                });
            }
            (encoding, 0)
        }
        None if input.starts_with(&[0x4C, 0x6F, 0xA7, 0x94]) => {
            return Err(XmlError::UnsupportedEncoding {
                encoding: "EBCDIC".to_owned(),
                reason: "EBCDIC documents must be converted with a `charset` step first".to_owned(),
            });
        }
        None => {
            return Ok(Source::Utf8 {
                bytes: input,
                bom: 0,
            });
        }
    };
    let body = &input[bom..];
    match quick_xml::encoding::decode(body, encoding) {
        Ok(text) => Ok(Source::Transcoded(text.into_owned())),
        Err(_) => {
            // Find where decoding stops, only on this error path.
            let mut decoder = encoding.new_decoder_without_bom_handling();
            let mut sink = String::with_capacity(
                decoder
                    .max_utf8_buffer_length_without_replacement(body.len())
                    .unwrap_or(0),
            );
            let (_, read) = decoder.decode_to_string_without_replacement(body, &mut sink, true);
            Err(XmlError::InvalidEncoding {
                encoding: encoding.name(),
                offset: bom + read.min(body.len()),
            })
        }
    }
}

/// The `encoding` of the XML declaration at the start of ASCII-compatible input, if any.
fn declared_encoding(input: &[u8]) -> Result<Option<&str>, XmlError> {
    // A declaration longer than this is not worth sniffing; the parser reports it later.
    const SNIFF: usize = 1024;
    let head = &input[..input.len().min(SNIFF)];
    let Some(decl) = head
        .windows(2)
        .position(|w| w == b"?>")
        .and_then(|end| head.get(5..end))
    else {
        return Ok(None);
    };
    let Ok(decl) = std::str::from_utf8(decl) else {
        return Ok(None);
    };
    if !decl.starts_with(is_xml_space) {
        return Ok(None);
    }
    match parse_decl(decl) {
        Ok(encoding) => Ok(encoding),
        Err(message) => Err(XmlError::Malformed {
            at: Position {
                offset: 0,
                line: 1,
                column: 1,
            },
            message,
        }),
    }
}

/// Parses the inside of `<?xml …?>` after `xml`: version, then optional encoding and standalone,
/// in that order (XML 1.0 production 23). Returns the encoding label.
pub(super) fn parse_decl(content: &str) -> Result<Option<&str>, String> {
    let mut rest = content;
    let mut encoding = None;
    let mut seen = 0;
    for (i, key) in ["version", "encoding", "standalone"]
        .into_iter()
        .enumerate()
    {
        let trimmed = rest.trim_start_matches(is_xml_space);
        if trimmed.is_empty() {
            break;
        }
        let had_space = trimmed.len() < rest.len();
        let Some(after_key) = trimmed.strip_prefix(key) else {
            if i == 0 {
                return Err("the XML declaration must start with `version`".to_owned());
            }
            continue;
        };
        if !had_space {
            return Err(format!(
                "space required before `{key}` in the XML declaration"
            ));
        }
        let after_eq = after_key
            .trim_start_matches(is_xml_space)
            .strip_prefix('=')
            .ok_or(format!("expected `=` after `{key}` in the XML declaration"))?
            .trim_start_matches(is_xml_space);
        let quote = after_eq
            .chars()
            .next()
            .filter(|c| *c == '"' || *c == '\'')
            .ok_or(format!(
                "the `{key}` value must be quoted in the XML declaration"
            ))?;
        let value_end = after_eq[1..]
            .find(quote)
            .ok_or(format!("unclosed `{key}` value in the XML declaration"))?;
        let value = &after_eq[1..1 + value_end];
        let valid = match key {
            "version" => value
                .strip_prefix("1.")
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())),
            "encoding" => {
                value.starts_with(|c: char| c.is_ascii_alphabetic())
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            }
            _ => value == "yes" || value == "no",
        };
        if !valid {
            return Err(format!("invalid {key} `{value}` in the XML declaration"));
        }
        if key == "encoding" {
            encoding = Some(value);
        }
        seen = i + 1;
        rest = &after_eq[value_end + 2..];
    }
    if seen == 0 {
        return Err("the XML declaration must start with `version`".to_owned());
    }
    if !rest.trim_start_matches(is_xml_space).is_empty() {
        return Err(format!(
            "unexpected `{}` in the XML declaration",
            rest.trim_matches(is_xml_space)
        ));
    }
    Ok(encoding)
}
#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::test_support::{convert, error};
    use super::super::{XmlToJsonOptions, xml_to_json};

    #[test]
    fn a_bom_does_not_reach_the_json() {
        let v = convert("\u{FEFF}<?xml version=\"1.0\"?><a>x</a>");
        assert_eq!(v, json!({"a": "x"}));
    }

    #[test]
    fn utf16_documents_are_decoded() {
        let text = "<?xml version=\"1.0\" encoding=\"UTF-16\"?><a>Grüße €</a>";
        let mut le = vec![0xFF, 0xFE];
        le.extend(text.encode_utf16().flat_map(|u| u.to_le_bytes()));
        let mut be = vec![0xFE, 0xFF];
        be.extend(text.encode_utf16().flat_map(|u| u.to_be_bytes()));
        for input in [le, be] {
            let v = xml_to_json(&input, &XmlToJsonOptions::default()).expect("utf-16");
            assert_eq!(v, json!({"a": "Grüße €"}));
        }
    }

    #[test]
    fn latin1_documents_are_decoded() {
        let mut input = b"<?xml version='1.0' encoding='ISO-8859-1'?><a>".to_vec();
        input.extend([0x47, 0x72, 0xFC, 0xDF, 0x65]); // "Grüße"
        input.extend(b"</a>");
        let v = xml_to_json(&input, &XmlToJsonOptions::default()).expect("latin-1");
        assert_eq!(v, json!({"a": "Grüße"}));
    }

    #[test]
    fn unknown_encodings_and_invalid_utf8_are_errors() {
        let e = error(b"<?xml version='1.0' encoding='x-klingon'?><a/>");
        assert!(e.contains("unsupported encoding `x-klingon`"), "{e}");
        let e = error(b"<a>\n ok \xC3\x28</a>");
        assert!(
            e.starts_with("invalid UTF-8 at line 2, column 5 (byte 8)"),
            "{e}"
        );
    }
}
