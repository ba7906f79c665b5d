//! XML 1.0 (fifth edition) character classes: `Char`, the whitespace of `S`, `Name`, and the
//! one-pass scan for characters XML forbids everywhere.
//!
//! Invariant: these are the productions of the specification, exactly; the reader and the
//! writer both ask here whether something is a name, whitespace or a legal character, so what
//! `json_to_xml` writes is what `xml_to_json` accepts.

/// First byte offset (and code point) of a character XML 1.0 forbids everywhere: C0 controls
/// other than tab, LF and CR, and U+FFFE/U+FFFF. Chunks are first checked with branch-free
/// comparisons the compiler vectorises; only suspicious chunks are looked at byte by byte.
pub(super) fn first_illegal_char(s: &[u8]) -> Option<(usize, u32)> {
    const CHUNK: usize = 64;
    for (n, chunk) in s.chunks(CHUNK).enumerate() {
        let suspicious = chunk.iter().fold(false, |acc, &b| {
            acc | ((b < 0x20) & (b != b'\t') & (b != b'\n') & (b != b'\r')) | (b == 0xEF)
        });
        if !suspicious {
            continue;
        }
        for (j, &b) in chunk.iter().enumerate() {
            let at = n * CHUNK + j;
            if b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r') {
                return Some((at, u32::from(b)));
            }
            if b == 0xEF
                && s.get(at + 1) == Some(&0xBF)
                && let Some(&last @ (0xBE | 0xBF)) = s.get(at + 2)
            {
                return Some((at, 0xFFFE + u32::from(last - 0xBE)));
            }
        }
    }
    None
}

pub(super) fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

pub(super) fn is_xml_space_byte(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// XML 1.0 `Char` production.
pub(super) fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// XML 1.0 (fifth edition) `Name` production; colons are allowed (namespaces are checked
/// separately).
pub(super) fn is_xml_name(name: &str) -> bool {
    // Nearly all names are ASCII: check bytes without decoding characters.
    if name.is_ascii() {
        let bytes = name.as_bytes();
        return bytes
            .first()
            .is_some_and(|&b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
            && bytes[1..]
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-' | b'.'));
    }
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    is_name_start_char(first) && chars.all(is_name_char)
}

pub(super) fn is_name_start_char(c: char) -> bool {
    matches!(c,
        ':' | 'A'..='Z' | '_' | 'a'..='z'
        | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

pub(super) fn is_name_char(c: char) -> bool {
    is_name_start_char(c)
        || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}
