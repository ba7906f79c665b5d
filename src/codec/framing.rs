//! TCP framings: how a byte stream is cut into messages and how a reply is
//! wrapped, as tokio-util [`Decoder`]/[`Encoder`] implementations.
//!
//! Framings: `lines` (LF or CRLF; replies end with LF, `lines_crlf` with
//! CRLF), `length_prefixed` (1, 2 or 4 byte length, big or little endian,
//! counting or not counting the header itself), `delimited` (optional start
//! bytes, required end bytes, e.g. STX … ETX), `fixed` (N bytes per record) and
//! `mllp` (0x0B … 0x1C 0x0D).
//!
//! Invariant: the decoder never holds more than `max_frame` bytes of one frame
//! (plus the framing bytes): a frame that grows past the limit is an error at
//! once, not after it ends, so a client cannot make Ferry buffer forever. Bytes
//! outside frames (before a start marker) are skipped, never buffered. The
//! codec is pure: no I/O, no clocks, no logging.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};
use tokio_util::codec::{Decoder, Encoder};

/// How messages are cut out of (and written into) a TCP byte stream.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Framing {
    /// One message per line; LF or CRLF accepted, replies end with LF.
    Lines,
    /// Like `lines`, but replies end with CRLF.
    LinesCrlf,
    /// A binary length header before each message.
    LengthPrefixed(LengthPrefixed),
    /// Messages between start bytes (optional) and end bytes, e.g. STX/ETX:
    /// `{ start: [0x02], end: [0x03] }` or `{ start: "\x02", end: "\x03" }`.
    Delimited(Delimited),
    /// Every message is exactly this many bytes.
    Fixed(usize),
    /// MLLP (HL7 v2): 0x0B, message, 0x1C 0x0D.
    Mllp,
}

/// Options of the `length_prefixed` framing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LengthPrefixed {
    /// Size of the length header in bytes: 1, 2 or 4 (default 4).
    #[serde(default = "default_width")]
    pub bytes: u8,
    /// Byte order of the header: `big` (network order, default) or `little`.
    #[serde(default)]
    pub endian: Endian,
    /// The length counts the header too (default false: only the payload).
    #[serde(default)]
    pub includes_header: bool,
}

fn default_width() -> u8 {
    4
}

/// Byte order of a length header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Endian {
    #[default]
    Big,
    Little,
}

/// Options of the `delimited` framing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Delimited {
    /// Bytes that open a message (optional). Bytes before them are skipped.
    #[serde(default)]
    pub start: ByteSeq,
    /// Bytes that close a message (required).
    pub end: ByteSeq,
}

/// A byte sequence written as a list of numbers (`[0x02]`, `[2, 3]`) or a
/// string where each character up to U+00FF is one byte and `\xNN`, `\r`,
/// `\n`, `\t`, `\0`, `\\` escapes are understood (`'\x1c\r'`).
#[derive(Debug, Clone, Default, PartialEq, Eq, JsonSchema)]
#[schemars(with = "ByteSeqSchema")]
pub struct ByteSeq(pub Vec<u8>);

#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)] // only its schema is used
enum ByteSeqSchema {
    List(Vec<u8>),
    Text(String),
}

impl ByteSeq {
    /// Parse the string form (see the type's docs).
    pub fn parse(s: &str) -> Result<ByteSeq, String> {
        let mut out = Vec::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('x') | Some('X') => {
                        let hex: String = chars.by_ref().take(2).collect();
                        let b = u8::from_str_radix(&hex, 16)
                            .map_err(|_| format!("bad escape `\\x{hex}` in `{s}`"))?;
                        out.push(b);
                    }
                    Some('r') => out.push(b'\r'),
                    Some('n') => out.push(b'\n'),
                    Some('t') => out.push(b'\t'),
                    Some('0') => out.push(0),
                    Some('\\') => out.push(b'\\'),
                    other => {
                        return Err(format!(
                            "unknown escape `\\{}` in `{s}` (use \\xNN, \\r, \\n, \\t, \\0, \\\\)",
                            other.map(String::from).unwrap_or_default()
                        ));
                    }
                }
            } else {
                let b = u8::try_from(u32::from(c)).map_err(|_| {
                    format!("`{c}` in `{s}` is not a single byte (use \\xNN escapes)")
                })?;
                out.push(b);
            }
        }
        Ok(ByteSeq(out))
    }
}

impl<'de> Deserialize<'de> for ByteSeq {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            List(Vec<u8>),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::List(v) => Ok(ByteSeq(v)),
            Raw::Text(s) => ByteSeq::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

const MLLP_START: &[u8] = &[0x0B];
const MLLP_END: &[u8] = &[0x1C, 0x0D];

impl Framing {
    /// A configuration problem (an empty end marker, a zero size), if any.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Framing::LengthPrefixed(l) if !matches!(l.bytes, 1 | 2 | 4) => Err(format!(
                "length_prefixed.bytes must be 1, 2 or 4, not {}",
                l.bytes
            )),
            Framing::Delimited(d) if d.end.0.is_empty() => {
                Err("delimited.end must hold at least one byte".into())
            }
            Framing::Fixed(0) => Err("fixed size must be at least 1 byte".into()),
            _ => Ok(()),
        }
    }

    /// A codec for this framing that refuses frames over `max_frame` bytes.
    pub fn codec(&self, max_frame: usize) -> FrameCodec {
        FrameCodec {
            framing: self.clone(),
            max_frame,
            scanned: 0,
            in_frame: false,
        }
    }

    /// Short name for logs and descriptions.
    pub fn name(&self) -> &'static str {
        match self {
            Framing::Lines => "lines",
            Framing::LinesCrlf => "lines_crlf",
            Framing::LengthPrefixed(_) => "length_prefixed",
            Framing::Delimited(_) => "delimited",
            Framing::Fixed(_) => "fixed",
            Framing::Mllp => "mllp",
        }
    }
}

/// Why a stream could not be framed, or a payload not wrapped.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {size} bytes or more is over the {max} byte limit")]
    TooLarge { size: usize, max: usize },
    #[error("cannot frame reply: {0}")]
    Unencodable(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Decoder and encoder for one connection (keeps scan state between reads).
#[derive(Debug)]
pub struct FrameCodec {
    framing: Framing,
    max_frame: usize,
    /// Bytes of the current frame already searched for the end marker, so a
    /// frame arriving in many small reads is scanned once, not quadratically.
    scanned: usize,
    /// A start marker was seen and removed (delimited framings).
    in_frame: bool,
}

impl FrameCodec {
    fn too_large(&self, size: usize) -> FrameError {
        FrameError::TooLarge {
            size,
            max: self.max_frame,
        }
    }

    fn decode_lines(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let from = self.scanned.min(src.len());
        match memchr(b'\n', &src[from..]) {
            Some(i) => {
                let end = from + i;
                let mut line = src.split_to(end + 1);
                self.scanned = 0;
                line.truncate(end);
                if line.last() == Some(&b'\r') {
                    line.truncate(end - 1);
                }
                if line.len() > self.max_frame {
                    return Err(self.too_large(line.len()));
                }
                Ok(Some(line.freeze()))
            }
            None => {
                self.scanned = src.len();
                // Allow one byte for a CR that belongs to the terminator.
                if src.len() > self.max_frame + 1 {
                    return Err(self.too_large(src.len()));
                }
                Ok(None)
            }
        }
    }

    fn decode_length(
        &mut self,
        l: &LengthPrefixed,
        src: &mut BytesMut,
    ) -> Result<Option<Bytes>, FrameError> {
        let width = usize::from(l.bytes);
        if src.len() < width {
            return Ok(None);
        }
        let header = &src[..width];
        let declared = match (width, l.endian) {
            (1, _) => u64::from(header[0]),
            (2, Endian::Big) => u64::from(u16::from_be_bytes([header[0], header[1]])),
            (2, Endian::Little) => u64::from(u16::from_le_bytes([header[0], header[1]])),
            (_, Endian::Big) => u64::from(u32::from_be_bytes([
                header[0], header[1], header[2], header[3],
            ])),
            (_, Endian::Little) => u64::from(u32::from_le_bytes([
                header[0], header[1], header[2], header[3],
            ])),
        };
        let payload = if l.includes_header {
            declared.checked_sub(width as u64).ok_or_else(|| {
                FrameError::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("length header says {declared}, less than the header itself"),
                ))
            })?
        } else {
            declared
        };
        let payload = usize::try_from(payload).unwrap_or(usize::MAX);
        if payload > self.max_frame {
            return Err(self.too_large(payload));
        }
        if src.len() < width + payload {
            src.reserve(width + payload - src.len());
            return Ok(None);
        }
        src.advance(width);
        Ok(Some(src.split_to(payload).freeze()))
    }

    fn decode_delimited(
        &mut self,
        start: &[u8],
        end: &[u8],
        src: &mut BytesMut,
    ) -> Result<Option<Bytes>, FrameError> {
        if !self.in_frame {
            if start.is_empty() {
                self.in_frame = true;
            } else {
                match find(src, start) {
                    Some(i) => {
                        src.advance(i + start.len());
                        self.in_frame = true;
                        self.scanned = 0;
                    }
                    None => {
                        // Skip junk, keeping a possible partial start marker.
                        let keep = (start.len() - 1).min(src.len());
                        src.advance(src.len() - keep);
                        return Ok(None);
                    }
                }
            }
        }
        // Re-scan the last end.len()-1 bytes: the marker may straddle reads.
        let from = self.scanned.saturating_sub(end.len() - 1).min(src.len());
        match find(&src[from..], end) {
            Some(i) => {
                let len = from + i;
                if len > self.max_frame {
                    return Err(self.too_large(len));
                }
                let frame = src.split_to(len).freeze();
                src.advance(end.len());
                self.in_frame = false;
                self.scanned = 0;
                Ok(Some(frame))
            }
            None => {
                self.scanned = src.len();
                if src.len() > self.max_frame + end.len() - 1 {
                    return Err(self.too_large(src.len()));
                }
                Ok(None)
            }
        }
    }
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        match self.framing.clone() {
            Framing::Lines | Framing::LinesCrlf => self.decode_lines(src),
            Framing::LengthPrefixed(l) => self.decode_length(&l, src),
            Framing::Delimited(d) => self.decode_delimited(&d.start.0, &d.end.0, src),
            Framing::Mllp => self.decode_delimited(MLLP_START, MLLP_END, src),
            Framing::Fixed(n) => {
                if src.len() < n {
                    src.reserve(n - src.len());
                    return Ok(None);
                }
                Ok(Some(src.split_to(n).freeze()))
            }
        }
    }

    /// At end of stream an unfinished frame is discarded (the peer never
    /// completed it, so it was never acknowledged); the caller can tell from
    /// [`FrameCodec::pending`] that bytes were lost.
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        self.decode(src)
    }
}

impl FrameCodec {
    /// Whether an incomplete frame is buffered (e.g. when the peer closed
    /// mid-frame). Bytes skipped outside frames do not count.
    pub fn pending(&self, buffered: &BytesMut) -> bool {
        match &self.framing {
            Framing::Delimited(d) if !d.start.0.is_empty() => self.in_frame,
            Framing::Mllp => self.in_frame,
            _ => !buffered.is_empty(),
        }
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), FrameError> {
        match &self.framing {
            Framing::Lines | Framing::LinesCrlf => {
                if memchr(b'\n', &item).is_some() || memchr(b'\r', &item).is_some() {
                    return Err(FrameError::Unencodable(
                        "a `lines` frame cannot contain a line break".into(),
                    ));
                }
                dst.reserve(item.len() + 2);
                dst.put_slice(&item);
                if self.framing == Framing::LinesCrlf {
                    dst.put_u8(b'\r');
                }
                dst.put_u8(b'\n');
            }
            Framing::LengthPrefixed(l) => {
                let width = usize::from(l.bytes);
                let total = item.len() + if l.includes_header { width } else { 0 };
                let limit: u64 = match width {
                    1 => u64::from(u8::MAX),
                    2 => u64::from(u16::MAX),
                    _ => u64::from(u32::MAX),
                };
                if total as u64 > limit {
                    return Err(FrameError::Unencodable(format!(
                        "{} bytes do not fit a {width}-byte length header",
                        item.len()
                    )));
                }
                dst.reserve(width + item.len());
                match (width, l.endian) {
                    (1, _) => dst.put_u8(total as u8),
                    (2, Endian::Big) => dst.put_u16(total as u16),
                    (2, Endian::Little) => dst.put_u16_le(total as u16),
                    (_, Endian::Big) => dst.put_u32(total as u32),
                    (_, Endian::Little) => dst.put_u32_le(total as u32),
                }
                dst.put_slice(&item);
            }
            Framing::Delimited(d) => wrap(&d.start.0, &d.end.0, &item, dst)?,
            Framing::Mllp => wrap(MLLP_START, MLLP_END, &item, dst)?,
            Framing::Fixed(n) => {
                if item.len() != *n {
                    return Err(FrameError::Unencodable(format!(
                        "a `fixed` frame must be exactly {n} bytes, this one is {}",
                        item.len()
                    )));
                }
                dst.put_slice(&item);
            }
        }
        Ok(())
    }
}

fn wrap(start: &[u8], end: &[u8], item: &[u8], dst: &mut BytesMut) -> Result<(), FrameError> {
    if find(item, end).is_some() {
        return Err(FrameError::Unencodable(
            "the payload contains the end marker".into(),
        ));
    }
    dst.reserve(start.len() + item.len() + end.len());
    dst.put_slice(start);
    dst.put_slice(item);
    dst.put_slice(end);
    Ok(())
}

fn memchr(b: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&c| c == b)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() == 1 {
        return memchr(needle[0], hay);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(framing: &Framing, max: usize, chunks: &[&[u8]]) -> Vec<Result<Bytes, String>> {
        let mut codec = framing.codec(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for c in chunks {
            buf.extend_from_slice(c);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(f)) => out.push(Ok(f)),
                    Ok(None) => break,
                    Err(e) => {
                        out.push(Err(e.to_string()));
                        return out;
                    }
                }
            }
        }
        out
    }

    fn frames(framing: &Framing, chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        decode_all(framing, 1024, chunks)
            .into_iter()
            .map(|r| r.unwrap().to_vec())
            .collect()
    }

    fn encode(framing: &Framing, payload: &[u8]) -> Vec<u8> {
        let mut dst = BytesMut::new();
        framing
            .codec(1024)
            .encode(Bytes::copy_from_slice(payload), &mut dst)
            .unwrap();
        dst.to_vec()
    }

    fn one_byte_at_a_time(bytes: &[u8]) -> Vec<&[u8]> {
        bytes.chunks(1).collect()
    }

    #[test]
    fn lines_accept_lf_and_crlf_and_split_reads() {
        let f = Framing::Lines;
        let input = b"one\r\ntwo\n\nthree\r\n";
        let expect: Vec<Vec<u8>> =
            vec![b"one".to_vec(), b"two".to_vec(), vec![], b"three".to_vec()];
        assert_eq!(frames(&f, &[input]), expect);
        assert_eq!(frames(&f, &one_byte_at_a_time(input)), expect);
        assert_eq!(encode(&f, b"x"), b"x\n");
        assert_eq!(encode(&Framing::LinesCrlf, b"x"), b"x\r\n");
    }

    #[test]
    fn every_framing_round_trips_binary_payloads_in_any_chunking() {
        let payload: Vec<u8> = (0u8..=255).filter(|b| *b != 0x03 && *b != 0x1C).collect();
        let framings = [
            Framing::LengthPrefixed(LengthPrefixed {
                bytes: 4,
                endian: Endian::Big,
                includes_header: false,
            }),
            Framing::LengthPrefixed(LengthPrefixed {
                bytes: 2,
                endian: Endian::Little,
                includes_header: true,
            }),
            Framing::LengthPrefixed(LengthPrefixed {
                bytes: 1,
                endian: Endian::Big,
                includes_header: true,
            }),
            Framing::Delimited(Delimited {
                start: ByteSeq(vec![0x02]),
                end: ByteSeq(vec![0x03]),
            }),
            Framing::Delimited(Delimited {
                start: ByteSeq::default(),
                end: ByteSeq(vec![0x1C, 0x1C]),
            }),
            Framing::Mllp,
            Framing::Fixed(payload.len()),
        ];
        for f in framings {
            let mut wire = encode(&f, &payload);
            wire.extend(encode(&f, &payload));
            assert_eq!(frames(&f, &[&wire]), vec![payload.clone(); 2], "{f:?}");
            assert_eq!(
                frames(&f, &one_byte_at_a_time(&wire)),
                vec![payload.clone(); 2],
                "{f:?} byte by byte"
            );
        }
    }

    #[test]
    fn length_header_layouts() {
        let lp = |bytes, endian, includes_header| {
            Framing::LengthPrefixed(LengthPrefixed {
                bytes,
                endian,
                includes_header,
            })
        };
        assert_eq!(encode(&lp(4, Endian::Big, false), b"ab"), b"\0\0\0\x02ab");
        assert_eq!(
            encode(&lp(4, Endian::Little, false), b"ab"),
            b"\x02\0\0\0ab"
        );
        assert_eq!(encode(&lp(2, Endian::Big, true), b"ab"), b"\0\x04ab");
        assert_eq!(encode(&lp(1, Endian::Big, false), b"ab"), b"\x02ab");
        let mut dst = BytesMut::new();
        let err = lp(1, Endian::Big, false)
            .codec(1024)
            .encode(Bytes::from(vec![0u8; 300]), &mut dst)
            .unwrap_err();
        assert!(err.to_string().contains("1-byte length header"), "{err}");
        // A header smaller than itself is corrupt input, not a panic.
        let r = decode_all(&lp(2, Endian::Big, true), 1024, &[b"\0\x01zz"]);
        assert!(r[0].as_ref().unwrap_err().contains("less than the header"));
    }

    /// Literal wire bytes for every framing and option, written out by hand
    /// (not produced by the encoder), checked in both directions.
    #[test]
    fn every_framing_encodes_and_decodes_its_literal_wire_bytes() {
        let lp = |bytes, endian, includes_header| {
            Framing::LengthPrefixed(LengthPrefixed {
                bytes,
                endian,
                includes_header,
            })
        };
        let delimited = |start: &[u8], end: &[u8]| {
            Framing::Delimited(Delimited {
                start: ByteSeq(start.to_vec()),
                end: ByteSeq(end.to_vec()),
            })
        };
        let payload = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123"; // 30 bytes = 0x1e
        let cases: Vec<(Framing, &[u8], &[u8])> = vec![
            (lp(1, Endian::Big, false), b"\x1e", b""),
            (lp(1, Endian::Little, false), b"\x1e", b""),
            (lp(1, Endian::Big, true), b"\x1f", b""),
            (lp(1, Endian::Little, true), b"\x1f", b""),
            (lp(2, Endian::Big, false), b"\x00\x1e", b""),
            (lp(2, Endian::Little, false), b"\x1e\x00", b""),
            (lp(2, Endian::Big, true), b"\x00\x20", b""),
            (lp(2, Endian::Little, true), b"\x20\x00", b""),
            (lp(4, Endian::Big, false), b"\x00\x00\x00\x1e", b""),
            (lp(4, Endian::Little, false), b"\x1e\x00\x00\x00", b""),
            (lp(4, Endian::Big, true), b"\x00\x00\x00\x22", b""),
            (lp(4, Endian::Little, true), b"\x22\x00\x00\x00", b""),
            (Framing::Lines, b"", b"\n"),
            (Framing::LinesCrlf, b"", b"\r\n"),
            (delimited(b"\x02", b"\x03"), b"\x02", b"\x03"),
            (delimited(b"", b"\x1c\x1c"), b"", b"\x1c\x1c"),
            (delimited(b"<<", b">>\r\n"), b"<<", b">>\r\n"),
            (Framing::Fixed(30), b"", b""),
            (Framing::Mllp, b"\x0b", b"\x1c\x0d"),
        ];
        for (f, before, after) in cases {
            let wire = [before, &payload[..], after].concat();
            assert_eq!(encode(&f, payload), wire, "{f:?} encodes");
            assert_eq!(
                frames(&f, &[&wire]),
                vec![payload.to_vec()],
                "{f:?} decodes"
            );
        }
        // Lengths above one byte use every byte of the header: 0x0102 = 258.
        let long = vec![b'x'; 258];
        let header: [(Framing, &[u8]); 4] = [
            (lp(2, Endian::Big, false), b"\x01\x02"),
            (lp(2, Endian::Little, false), b"\x02\x01"),
            (lp(4, Endian::Big, false), b"\x00\x00\x01\x02"),
            (lp(4, Endian::Little, false), b"\x02\x01\x00\x00"),
        ];
        for (f, h) in header {
            let wire = [h, &long[..]].concat();
            assert_eq!(encode(&f, &long), wire, "{f:?} encodes 258 bytes");
            assert_eq!(frames(&f, &[&wire]), vec![long.clone()], "{f:?} decodes");
        }
    }

    #[test]
    fn oversized_frames_fail_before_they_end() {
        let max = 16;
        let big = vec![b'a'; 64];
        let r = decode_all(&Framing::Lines, max, &[&big]);
        assert!(
            r[0].as_ref()
                .unwrap_err()
                .contains("over the 16 byte limit")
        );
        let r = decode_all(&Framing::Mllp, max, &[b"\x0b", &big]);
        assert!(r[0].is_err());
        let r = decode_all(
            &Framing::LengthPrefixed(LengthPrefixed {
                bytes: 4,
                endian: Endian::Big,
                includes_header: false,
            }),
            max,
            &[b"\x7f\xff\xff\xff"],
        );
        assert!(r[0].as_ref().unwrap_err().contains("2147483647"));
        // Exactly at the limit is fine.
        let exact = [vec![b'a'; 16], b"\r\n".to_vec()].concat();
        assert_eq!(decode_all(&Framing::Lines, max, &[&exact]).len(), 1);
        assert!(decode_all(&Framing::Lines, max, &[&exact])[0].is_ok());
    }

    #[test]
    fn junk_between_mllp_frames_is_skipped_and_empty_frames_are_frames() {
        let wire = b"\r\n\x0bMSH|a\x1c\r\n\n\x0b\x1c\r\x0bMSH|b\x1c\r";
        assert_eq!(
            frames(&Framing::Mllp, &[wire]),
            vec![b"MSH|a".to_vec(), vec![], b"MSH|b".to_vec()]
        );
        // A 0x1C not followed by CR is data.
        assert_eq!(
            frames(&Framing::Mllp, &[b"\x0ba\x1cb\x1c\r"]),
            vec![b"a\x1cb".to_vec()]
        );
    }

    #[test]
    fn pending_tells_a_mid_frame_close_from_a_clean_one() {
        let mut codec = Framing::Mllp.codec(1024);
        let mut buf = BytesMut::from(&b"\x0bMSH|half"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(codec.pending(&buf));
        let mut codec = Framing::Mllp.codec(1024);
        let mut buf = BytesMut::from(&b"\x0bdone\x1c\r\n"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_some());
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(!codec.pending(&buf));
    }

    #[test]
    fn replies_that_would_break_the_framing_are_refused() {
        let mut dst = BytesMut::new();
        assert!(
            Framing::Lines
                .codec(10)
                .encode(Bytes::from_static(b"a\nb"), &mut dst)
                .is_err()
        );
        assert!(
            Framing::Mllp
                .codec(10)
                .encode(Bytes::from_static(b"a\x1c\rb"), &mut dst)
                .is_err()
        );
        assert!(
            Framing::Fixed(4)
                .codec(10)
                .encode(Bytes::from_static(b"abc"), &mut dst)
                .is_err()
        );
    }

    #[test]
    fn byte_sequences_parse_from_text_or_lists() {
        assert_eq!(ByteSeq::parse("\\x02").unwrap().0, vec![2]);
        assert_eq!(ByteSeq::parse("\\x1c\\r").unwrap().0, vec![0x1c, 13]);
        assert_eq!(ByteSeq::parse("\u{3}").unwrap().0, vec![3]);
        assert_eq!(ByteSeq::parse("ÿ").unwrap().0, vec![0xff]);
        assert!(ByteSeq::parse("€").is_err());
        assert!(ByteSeq::parse("\\q").is_err());
        assert!(ByteSeq::parse("\\xZZ").is_err());
        let d: Delimited = serde_json::from_str(r#"{"start":[2],"end":"\\x03"}"#).unwrap();
        assert_eq!((d.start.0, d.end.0), (vec![2], vec![3]));
    }
}
