//! Character sets: decode legacy bytes into UTF-8 text and encode text back.
//!
//! UTF-8, true ISO-8859-1 (each byte is the code point of the same value),
//! the EBCDIC code pages 037 (US/Canada), 500 (International) and their euro
//! variants 1140 and 1148 from tables in this file, and every WHATWG encoding
//! through encoding_rs (windows-1250…1258, ISO-8859-x, Shift_JIS, EUC-JP,
//! GBK, Big5, KOI8, UTF-16 for decoding, …). Note that WHATWG's `latin1` label
//! means windows-1252; here `latin1` and `iso-8859-1` are the real thing.
//!
//! Invariant: nothing is replaced silently. With [`OnError::Fail`] a byte
//! sequence that is invalid in the source charset, or a character the target
//! charset cannot represent, is an error naming the offset; with
//! [`OnError::Replace`] it becomes U+FFFD (decoding) or `?` (encoding).

use encoding_rs::{DecoderResult, Encoding};

/// What to do with bytes or characters that have no mapping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Fail the message (bad input), naming the offset (default).
    #[default]
    Fail,
    /// Replace with U+FFFD when decoding, `?` when encoding.
    Replace,
}

/// A character set Ferry can decode from and encode to.
#[derive(Debug, Clone, Copy)]
pub enum Charset {
    Utf8,
    Latin1,
    Ebcdic(EbcdicPage),
    Whatwg(&'static Encoding),
}

/// An EBCDIC single-byte code page.
#[derive(Debug, Clone, Copy)]
pub struct EbcdicPage {
    name: &'static str,
    decode: &'static [u8; 256],
    encode: &'static [u8; 256],
    /// Euro variant: byte 0x9F is `€` instead of `¤`.
    euro: bool,
}

const EURO_BYTE: u8 = 0x9F;

impl EbcdicPage {
    fn decode_byte(&self, b: u8) -> char {
        if self.euro && b == EURO_BYTE {
            '€'
        } else {
            char::from(self.decode[usize::from(b)])
        }
    }

    fn encode_char(&self, c: char) -> Option<u8> {
        match c {
            '€' if self.euro => Some(EURO_BYTE),
            '\u{a4}' if self.euro => None,
            _ => u8::try_from(u32::from(c))
                .ok()
                .map(|cp| self.encode[usize::from(cp)]),
        }
    }
}

/// The problem with a text or byte sequence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CharsetError {
    #[error(
        "unknown charset `{0}` (examples: utf-8, latin1, windows-1252, cp037, cp500, cp1140, shift_jis)"
    )]
    Unknown(String),
    #[error("cannot encode to {0}: it is only supported for decoding")]
    DecodeOnly(String),
    #[error("invalid {charset} byte sequence at offset {offset}")]
    Malformed { charset: String, offset: usize },
    #[error("character {ch:?} (U+{code:04X}) at byte offset {offset} has no mapping in {charset}", code = u32::from(*ch))]
    Unmappable {
        charset: String,
        ch: char,
        offset: usize,
    },
}

impl Charset {
    /// Look a charset up by name (case and `-`/`_` insensitive for the EBCDIC
    /// and Latin-1 names; WHATWG labels otherwise).
    pub fn from_name(name: &str) -> Result<Charset, CharsetError> {
        let norm: String = name
            .trim()
            .to_ascii_lowercase()
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect();
        let ebcdic = |p: EbcdicPage| Ok(Charset::Ebcdic(p));
        match norm.as_str() {
            "utf8" => Ok(Charset::Utf8),
            "latin1" | "iso88591" | "l1" | "iso885911987" => Ok(Charset::Latin1),
            "cp037" | "ibm037" | "ibm37" | "cp37" | "ebcdiccpus" | "ebcdic037" => {
                ebcdic(CP037_PAGE)
            }
            "cp500" | "ibm500" | "ebcdic500" | "ebcdicinternational" => ebcdic(CP500_PAGE),
            "cp1140" | "ibm1140" | "ibm01140" => ebcdic(CP1140_PAGE),
            "cp1148" | "ibm1148" | "ibm01148" => ebcdic(CP1148_PAGE),
            _ => Encoding::for_label(name.trim().as_bytes())
                .filter(|e| *e != encoding_rs::REPLACEMENT)
                .map(Charset::Whatwg)
                .ok_or_else(|| CharsetError::Unknown(name.to_string())),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Charset::Utf8 => "UTF-8",
            Charset::Latin1 => "ISO-8859-1",
            Charset::Ebcdic(p) => p.name,
            Charset::Whatwg(e) => e.name(),
        }
    }

    /// Whether text can be encoded into this charset (UTF-16 only decodes).
    pub fn can_encode(&self) -> Result<(), CharsetError> {
        match self {
            Charset::Whatwg(e) if e.output_encoding() != *e => {
                Err(CharsetError::DecodeOnly(e.name().into()))
            }
            _ => Ok(()),
        }
    }

    /// Bytes in this charset → UTF-8 text.
    pub fn decode(&self, bytes: &[u8], on_error: OnError) -> Result<String, CharsetError> {
        match self {
            Charset::Latin1 => Ok(bytes.iter().map(|&b| char::from(b)).collect()),
            Charset::Ebcdic(p) => Ok(bytes.iter().map(|&b| p.decode_byte(b)).collect()),
            Charset::Utf8 => self.decode_whatwg(encoding_rs::UTF_8, bytes, on_error),
            Charset::Whatwg(e) => self.decode_whatwg(e, bytes, on_error),
        }
    }

    fn decode_whatwg(
        &self,
        enc: &'static Encoding,
        bytes: &[u8],
        on_error: OnError,
    ) -> Result<String, CharsetError> {
        if on_error == OnError::Replace {
            let (text, _) = enc.decode_with_bom_removal(bytes);
            return Ok(text.into_owned());
        }
        let mut decoder = enc.new_decoder_with_bom_removal();
        let cap = decoder
            .max_utf8_buffer_length_without_replacement(bytes.len())
            .unwrap_or(bytes.len().saturating_mul(3));
        let mut out = String::with_capacity(cap);
        let (result, read) = decoder.decode_to_string_without_replacement(bytes, &mut out, true);
        match result {
            DecoderResult::InputEmpty => Ok(out),
            DecoderResult::Malformed(bad, after) => Err(CharsetError::Malformed {
                charset: self.name().into(),
                offset: read.saturating_sub(usize::from(bad) + usize::from(after)),
            }),
            // The buffer was sized for the worst case.
            DecoderResult::OutputFull => Err(CharsetError::Malformed {
                charset: self.name().into(),
                offset: read,
            }),
        }
    }

    /// UTF-8 text → bytes in this charset.
    pub fn encode(&self, text: &str, on_error: OnError) -> Result<Vec<u8>, CharsetError> {
        self.can_encode()?;
        let single = |f: &dyn Fn(char) -> Option<u8>, replacement: u8| {
            let mut out = Vec::with_capacity(text.len());
            for (offset, c) in text.char_indices() {
                match (f(c), on_error) {
                    (Some(b), _) => out.push(b),
                    (None, OnError::Replace) => out.push(replacement),
                    (None, OnError::Fail) => {
                        return Err(CharsetError::Unmappable {
                            charset: self.name().into(),
                            ch: c,
                            offset,
                        });
                    }
                }
            }
            Ok(out)
        };
        match self {
            Charset::Utf8 => Ok(text.as_bytes().to_vec()),
            Charset::Latin1 => single(&|c| u8::try_from(u32::from(c)).ok(), b'?'),
            Charset::Ebcdic(p) => single(&|c| p.encode_char(c), p.encode[usize::from(b'?')]),
            Charset::Whatwg(e) => self.encode_whatwg(e, text, on_error),
        }
    }

    fn encode_whatwg(
        &self,
        enc: &'static Encoding,
        text: &str,
        on_error: OnError,
    ) -> Result<Vec<u8>, CharsetError> {
        let mut encoder = enc.new_encoder();
        let mut out = Vec::new();
        let mut rest = text;
        loop {
            let need = encoder
                .max_buffer_length_from_utf8_without_replacement(rest.len())
                .unwrap_or(rest.len().saturating_mul(4))
                + 8;
            out.reserve(need);
            let (result, read) =
                encoder.encode_from_utf8_to_vec_without_replacement(rest, &mut out, true);
            match result {
                encoding_rs::EncoderResult::InputEmpty => return Ok(out),
                encoding_rs::EncoderResult::OutputFull => rest = &rest[read..],
                encoding_rs::EncoderResult::Unmappable(c) => {
                    if on_error == OnError::Fail {
                        return Err(CharsetError::Unmappable {
                            charset: self.name().into(),
                            ch: c,
                            offset: text.len() - rest.len() + read - c.len_utf8(),
                        });
                    }
                    out.push(b'?');
                    rest = &rest[read..];
                }
            }
        }
    }
}

const fn invert(table: &[u8; 256]) -> [u8; 256] {
    let mut out = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        out[table[i] as usize] = i as u8;
        i += 1;
    }
    out
}

static CP037_ENCODE: [u8; 256] = invert(&CP037);
static CP500_ENCODE: [u8; 256] = invert(&CP500);

const CP037_PAGE: EbcdicPage = EbcdicPage {
    name: "IBM037",
    decode: &CP037,
    encode: &CP037_ENCODE,
    euro: false,
};
const CP500_PAGE: EbcdicPage = EbcdicPage {
    name: "IBM500",
    decode: &CP500,
    encode: &CP500_ENCODE,
    euro: false,
};
const CP1140_PAGE: EbcdicPage = EbcdicPage {
    name: "IBM01140",
    decode: &CP037,
    encode: &CP037_ENCODE,
    euro: true,
};
const CP1148_PAGE: EbcdicPage = EbcdicPage {
    name: "IBM01148",
    decode: &CP500,
    encode: &CP500_ENCODE,
    euro: true,
};

// Both tables are permutations of U+0000..=U+00FF (checked by a test), so a
// byte fits each entry and the inverse table is total.
/// IBM code page 037: byte → Unicode code point (all within U+0000..=U+00FF).
const CP037: [u8; 256] = [
    0x00, 0x01, 0x02, 0x03, 0x9C, 0x09, 0x86, 0x7F, 0x97, 0x8D, 0x8E, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F,
    0x10, 0x11, 0x12, 0x13, 0x9D, 0x85, 0x08, 0x87, 0x18, 0x19, 0x92, 0x8F, 0x1C, 0x1D, 0x1E, 0x1F,
    0x80, 0x81, 0x82, 0x83, 0x84, 0x0A, 0x17, 0x1B, 0x88, 0x89, 0x8A, 0x8B, 0x8C, 0x05, 0x06, 0x07,
    0x90, 0x91, 0x16, 0x93, 0x94, 0x95, 0x96, 0x04, 0x98, 0x99, 0x9A, 0x9B, 0x14, 0x15, 0x9E, 0x1A,
    0x20, 0xA0, 0xE2, 0xE4, 0xE0, 0xE1, 0xE3, 0xE5, 0xE7, 0xF1, 0xA2, 0x2E, 0x3C, 0x28, 0x2B, 0x7C,
    0x26, 0xE9, 0xEA, 0xEB, 0xE8, 0xED, 0xEE, 0xEF, 0xEC, 0xDF, 0x21, 0x24, 0x2A, 0x29, 0x3B, 0xAC,
    0x2D, 0x2F, 0xC2, 0xC4, 0xC0, 0xC1, 0xC3, 0xC5, 0xC7, 0xD1, 0xA6, 0x2C, 0x25, 0x5F, 0x3E, 0x3F,
    0xF8, 0xC9, 0xCA, 0xCB, 0xC8, 0xCD, 0xCE, 0xCF, 0xCC, 0x60, 0x3A, 0x23, 0x40, 0x27, 0x3D, 0x22,
    0xD8, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0xAB, 0xBB, 0xF0, 0xFD, 0xFE, 0xB1,
    0xB0, 0x6A, 0x6B, 0x6C, 0x6D, 0x6E, 0x6F, 0x70, 0x71, 0x72, 0xAA, 0xBA, 0xE6, 0xB8, 0xC6, 0xA4,
    0xB5, 0x7E, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0xA1, 0xBF, 0xD0, 0xDD, 0xDE, 0xAE,
    0x5E, 0xA3, 0xA5, 0xB7, 0xA9, 0xA7, 0xB6, 0xBC, 0xBD, 0xBE, 0x5B, 0x5D, 0xAF, 0xA8, 0xB4, 0xD7,
    0x7B, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0xAD, 0xF4, 0xF6, 0xF2, 0xF3, 0xF5,
    0x7D, 0x4A, 0x4B, 0x4C, 0x4D, 0x4E, 0x4F, 0x50, 0x51, 0x52, 0xB9, 0xFB, 0xFC, 0xF9, 0xFA, 0xFF,
    0x5C, 0xF7, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0xB2, 0xD4, 0xD6, 0xD2, 0xD3, 0xD5,
    0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0xB3, 0xDB, 0xDC, 0xD9, 0xDA, 0x9F,
];

/// IBM code page 500: byte → Unicode code point (all within U+0000..=U+00FF).
const CP500: [u8; 256] = [
    0x00, 0x01, 0x02, 0x03, 0x9C, 0x09, 0x86, 0x7F, 0x97, 0x8D, 0x8E, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F,
    0x10, 0x11, 0x12, 0x13, 0x9D, 0x85, 0x08, 0x87, 0x18, 0x19, 0x92, 0x8F, 0x1C, 0x1D, 0x1E, 0x1F,
    0x80, 0x81, 0x82, 0x83, 0x84, 0x0A, 0x17, 0x1B, 0x88, 0x89, 0x8A, 0x8B, 0x8C, 0x05, 0x06, 0x07,
    0x90, 0x91, 0x16, 0x93, 0x94, 0x95, 0x96, 0x04, 0x98, 0x99, 0x9A, 0x9B, 0x14, 0x15, 0x9E, 0x1A,
    0x20, 0xA0, 0xE2, 0xE4, 0xE0, 0xE1, 0xE3, 0xE5, 0xE7, 0xF1, 0x5B, 0x2E, 0x3C, 0x28, 0x2B, 0x21,
    0x26, 0xE9, 0xEA, 0xEB, 0xE8, 0xED, 0xEE, 0xEF, 0xEC, 0xDF, 0x5D, 0x24, 0x2A, 0x29, 0x3B, 0x5E,
    0x2D, 0x2F, 0xC2, 0xC4, 0xC0, 0xC1, 0xC3, 0xC5, 0xC7, 0xD1, 0xA6, 0x2C, 0x25, 0x5F, 0x3E, 0x3F,
    0xF8, 0xC9, 0xCA, 0xCB, 0xC8, 0xCD, 0xCE, 0xCF, 0xCC, 0x60, 0x3A, 0x23, 0x40, 0x27, 0x3D, 0x22,
    0xD8, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0xAB, 0xBB, 0xF0, 0xFD, 0xFE, 0xB1,
    0xB0, 0x6A, 0x6B, 0x6C, 0x6D, 0x6E, 0x6F, 0x70, 0x71, 0x72, 0xAA, 0xBA, 0xE6, 0xB8, 0xC6, 0xA4,
    0xB5, 0x7E, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0xA1, 0xBF, 0xD0, 0xDD, 0xDE, 0xAE,
    0xA2, 0xA3, 0xA5, 0xB7, 0xA9, 0xA7, 0xB6, 0xBC, 0xBD, 0xBE, 0xAC, 0x7C, 0xAF, 0xA8, 0xB4, 0xD7,
    0x7B, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0xAD, 0xF4, 0xF6, 0xF2, 0xF3, 0xF5,
    0x7D, 0x4A, 0x4B, 0x4C, 0x4D, 0x4E, 0x4F, 0x50, 0x51, 0x52, 0xB9, 0xFB, 0xFC, 0xF9, 0xFA, 0xFF,
    0x5C, 0xF7, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0xB2, 0xD4, 0xD6, 0xD2, 0xD3, 0xD5,
    0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0xB3, 0xDB, 0xDC, 0xD9, 0xDA, 0x9F,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn cs(name: &str) -> Charset {
        Charset::from_name(name).unwrap()
    }

    #[test]
    fn ebcdic_tables_are_permutations_and_round_trip_every_byte() {
        for name in ["cp037", "cp500", "cp1140", "cp1148"] {
            let c = cs(name);
            let all: Vec<u8> = (0..=255).collect();
            let text = c.decode(&all, OnError::Fail).unwrap();
            assert_eq!(text.chars().count(), 256);
            let mut seen: Vec<char> = text.chars().collect();
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), 256, "{name} maps two bytes to one character");
            assert_eq!(c.encode(&text, OnError::Fail).unwrap(), all, "{name}");
        }
    }

    #[test]
    fn known_ebcdic_letters() {
        // "Hello, World!" in cp037; cp500 differs on `!` (0x5A vs 0x4F).
        let cp037 = b"\xC8\x85\x93\x93\x96\x6B\x40\xE6\x96\x99\x93\x84\x5A";
        assert_eq!(
            cs("cp037").decode(cp037, OnError::Fail).unwrap(),
            "Hello, World!"
        );
        assert_eq!(cs("cp500").encode("!", OnError::Fail).unwrap(), b"\x4F");
        assert_eq!(cs("IBM-037").decode(b"\x9F", OnError::Fail).unwrap(), "¤");
        assert_eq!(cs("cp1140").decode(b"\x9F", OnError::Fail).unwrap(), "€");
    }

    #[test]
    fn unmappable_characters_fail_or_become_question_marks() {
        for name in ["cp037", "latin1", "windows-1252", "shift_jis"] {
            let c = cs(name);
            let err = c.encode("ab\u{1F600}c", OnError::Fail).unwrap_err();
            assert!(
                matches!(err, CharsetError::Unmappable { offset: 2, .. }),
                "{name}: {err}"
            );
            let replaced = c.encode("ab\u{1F600}c", OnError::Replace).unwrap();
            assert_eq!(
                c.decode(&replaced, OnError::Fail).unwrap(),
                "ab?c",
                "{name}"
            );
        }
        let err = cs("cp1140").encode("¤", OnError::Fail).unwrap_err();
        assert!(err.to_string().contains("U+00A4"), "{err}");
    }

    #[test]
    fn malformed_bytes_fail_with_offset_or_become_replacement_characters() {
        let err = cs("utf-8").decode(b"ok\xff", OnError::Fail).unwrap_err();
        assert_eq!(
            err,
            CharsetError::Malformed {
                charset: "UTF-8".into(),
                offset: 2
            }
        );
        assert_eq!(
            cs("utf-8").decode(b"ok\xff", OnError::Replace).unwrap(),
            "ok\u{FFFD}"
        );
        let err = cs("shift_jis").decode(b"a\x81", OnError::Fail).unwrap_err();
        assert!(
            matches!(err, CharsetError::Malformed { offset: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn latin1_is_iso_8859_1_not_windows_1252() {
        assert_eq!(
            cs("latin1").decode(b"\x80\xe9", OnError::Fail).unwrap(),
            "\u{80}é"
        );
        assert_eq!(
            cs("windows-1252")
                .decode(b"\x80\xe9", OnError::Fail)
                .unwrap(),
            "€é"
        );
        assert_eq!(
            cs("ISO-8859-1").encode("é", OnError::Fail).unwrap(),
            b"\xe9"
        );
    }

    #[test]
    fn names_and_decode_only_charsets() {
        assert!(matches!(
            Charset::from_name("klingon"),
            Err(CharsetError::Unknown(_))
        ));
        let utf16 = cs("utf-16le");
        assert_eq!(utf16.decode(b"h\0i\0", OnError::Fail).unwrap(), "hi");
        assert!(matches!(
            utf16.can_encode(),
            Err(CharsetError::DecodeOnly(_))
        ));
        assert_eq!(
            cs("sjis").encode("日本", OnError::Fail).unwrap(),
            b"\x93\xfa\x96\x7b"
        );
    }
}
