//! End-to-end: 8-bit payloads from the corpus (EBCDIC record files and a
//! COMP binary from Cobrix, UTF-16 documents in both byte orders, the
//! gzipped 100,000-entry ACH file) through every TCP framing and MLLP, in
//! both directions: into a `tcp` source (echoed with `reply: result`) and out
//! of a `tcp` sink (HTTP in).
//!
//! Why: docs/legacy.md promises that a frame's bytes are the body untouched.
//! The wire bytes are written and read here by hand, not with Ferry's codec,
//! so a symmetric framing bug (endianness, a length that counts its header)
//! fails. A payload a framing cannot carry (a line break under `lines`, the
//! end marker inside a delimited frame, too long for a 1-byte length) is
//! not sent to the source, and the sink must refuse it with 500 naming why;
//! how many payloads each framing carries is pinned.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a panic is the report; helpers are shared by `mod common`

mod common;

use std::time::Duration;

use common::{Ferry, corpus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);

fn payloads() -> Vec<(&'static str, Vec<u8>)> {
    let files = [
        "fixed-width-cobol/data/test1_data/example.bin",
        "fixed-width-cobol/data/test3_data/TRAN2.AUG31.DATA.dat",
        "fixed-width-cobol/data/test9_data/TRAN.APR14.NPT.DATA.dat",
        "fixed-width-cobol/data/test16_data/ENTITY.DB.AUG12.DATA.FIX.LEN.dat",
        "fixed-width-cobol/data/test19_display_num/data.dat",
        "quick-xml-encodings/utf16be.xml",
        "quick-xml-encodings/utf16le.xml",
        "quick-xml-encodings/utf16be-bom.xml",
        "quick-xml-encodings/utf16le-bom.xml",
        "csv/csv-parser/test/fixtures/bench/utf16.csv",
        "csv/csv-parser/test/fixtures/bench/utf16-big.csv",
        "xml-w3c-conf/xmlconf/japanese/weekly-utf-16.xml",
        "xml-w3c-conf/xmlconf/japanese/weekly-little-endian.xml",
        "xml-w3c-conf/xmlconf/japanese/pr-xml-utf-16.xml",
        "xml-w3c-conf/xmlconf/japanese/pr-xml-little-endian.xml",
        "edi/edi-net/test/indice.Edi.Tests/Samples/Aperak_issue235.xml",
        "fixed-width-ach/test/testdata/large-files/PPD-200-batches-100000-entries.ach.gz",
    ];
    let v: Vec<_> = files
        .iter()
        .map(|f| (*f, std::fs::read(corpus(f)).unwrap()))
        .collect();
    // They are 8-bit: every one holds bytes that are not printable ASCII.
    for (f, b) in &v {
        assert!(b.iter().any(|&c| c >= 0x80 || c == 0), "{f}");
    }
    v
}

/// A framing as Ferry's YAML names it and as the wire carries it.
struct Wire {
    yaml: &'static str,
    kind: Kind,
    /// Payloads it carries, of the 17 (checked against `frame`).
    carries: usize,
    /// Why the sink refuses the others (part of the error).
    refusal: &'static str,
}

enum Kind {
    Len {
        width: usize,
        little: bool,
        counts_header: bool,
    },
    Delimited {
        start: &'static [u8],
        end: &'static [u8],
    },
    Lines {
        crlf: bool,
    },
    Fixed(usize),
}

fn wires() -> Vec<Wire> {
    let mut v = Vec::new();
    for (width, carries, refusal) in [
        (1, 6, "do not fit a 1-byte length header"),
        (2, 14, "do not fit a 2-byte length header"),
        (4, 17, ""),
    ] {
        for little in [false, true] {
            for counts_header in [false, true] {
                let yaml = Box::leak(
                    format!(
                        "{{ length_prefixed: {{ bytes: {width}, endian: {}, includes_header: {counts_header} }} }}",
                        if little { "little" } else { "big" }
                    )
                    .into_boxed_str(),
                );
                v.push(Wire {
                    yaml,
                    kind: Kind::Len {
                        width,
                        little,
                        counts_header,
                    },
                    carries,
                    refusal,
                });
            }
        }
    }
    v.push(Wire {
        yaml: "{ delimited: { start: [0x02], end: [0x03] } }",
        kind: Kind::Delimited {
            start: &[0x02],
            end: &[0x03],
        },
        carries: 11,
        refusal: "the payload contains the end marker",
    });
    v.push(Wire {
        yaml: "{ delimited: { end: \"\\r\\n.\\r\\n\" } }",
        kind: Kind::Delimited {
            start: &[],
            end: b"\r\n.\r\n",
        },
        carries: 17,
        refusal: "",
    });
    v.push(Wire {
        yaml: "mllp",
        kind: Kind::Delimited {
            start: &[0x0B],
            end: &[0x1C, 0x0D],
        },
        carries: 16,
        refusal: "the payload contains the end marker",
    });
    for crlf in [false, true] {
        v.push(Wire {
            yaml: if crlf { "lines_crlf" } else { "lines" },
            kind: Kind::Lines { crlf },
            carries: 2,
            refusal: "a `lines` frame cannot contain a line break",
        });
    }
    v.push(Wire {
        yaml: "{ fixed: 45 }",
        kind: Kind::Fixed(45),
        carries: 2,
        refusal: "a `fixed` frame must be exactly 45 bytes",
    });
    v
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The payload framed for the wire, or None when the framing cannot carry
/// it. `fixed` frames carry a payload as consecutive records.
fn frame(kind: &Kind, p: &[u8]) -> Option<Vec<u8>> {
    match *kind {
        Kind::Len {
            width,
            little,
            counts_header,
        } => {
            let n = p.len() + if counts_header { width } else { 0 };
            let mut out = match (width, little) {
                (1, _) => vec![u8::try_from(n).ok()?],
                (2, false) => u16::try_from(n).ok()?.to_be_bytes().to_vec(),
                (2, true) => u16::try_from(n).ok()?.to_le_bytes().to_vec(),
                (_, false) => u32::try_from(n).ok()?.to_be_bytes().to_vec(),
                (_, true) => u32::try_from(n).ok()?.to_le_bytes().to_vec(),
            };
            out.extend_from_slice(p);
            Some(out)
        }
        Kind::Delimited { start, end } => {
            if find(p, end).is_some() {
                return None;
            }
            Some([start, p, end].concat())
        }
        Kind::Lines { crlf } => {
            if p.contains(&b'\n') || p.contains(&b'\r') {
                return None;
            }
            Some([p, if crlf { b"\r\n" } else { b"\n" }].concat())
        }
        Kind::Fixed(n) => p.len().is_multiple_of(n).then(|| p.to_vec()),
    }
}

/// How many frames `frame` holds (records for `fixed`, else one).
fn frames_in(kind: &Kind, p: &[u8]) -> usize {
    match kind {
        Kind::Fixed(n) => p.len() / n,
        _ => 1,
    }
}

#[tokio::test]
async fn payloads_into_a_tcp_source_come_back_unchanged_in_every_framing() {
    let wires = wires();
    let routes: Vec<(String, String)> = wires
        .iter()
        .enumerate()
        .map(|(i, w)| {
            (
                format!("w{i}.yaml"),
                format!(
                    "from:\n  tcp: {{ listen: 127.0.0.1:0, framing: {}, reply: result, max_frame: 2MiB }}\n",
                    w.yaml
                ),
            )
        })
        .collect();
    let f = Ferry::start(&routes).await;
    let payloads = payloads();
    for (i, w) in wires.iter().enumerate() {
        let addr = f
            .engine
            .resources
            .tcp
            .local_addr(&format!("w{i}"))
            .await
            .unwrap();
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut carried = 0;
        for (name, p) in &payloads {
            let Some(wire) = frame(&w.kind, p) else {
                continue;
            };
            let what = format!("{name} over {}", w.yaml);
            s.write_all(&wire).await.unwrap();
            // The reply is the same frame: read it by its framing's rules.
            let back = match w.kind {
                Kind::Len { .. } | Kind::Lines { .. } | Kind::Delimited { .. } => {
                    common::read_exactly(&mut s, wire.len(), &what, WAIT).await
                }
                Kind::Fixed(_) => {
                    let mut all = Vec::new();
                    for _ in 0..frames_in(&w.kind, p) {
                        all.extend(common::read_exactly(&mut s, 45, &what, WAIT).await);
                    }
                    all
                }
            };
            assert!(back == wire, "{what}: the echoed frame differs");
            carried += 1;
        }
        assert_eq!(carried, w.carries, "payloads carried by {}", w.yaml);
    }
    f.engine.shutdown().await;
}

/// A TCP server that passes every byte it receives, on any connection, to
/// the channel.
async fn byte_sink() -> (std::net::SocketAddr, mpsc::UnboundedReceiver<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn payloads_out_of_a_tcp_sink_are_framed_exactly_or_refused_with_the_reason() {
    let wires = wires();
    let mut servers = Vec::new();
    let mut routes = Vec::new();
    for (i, w) in wires.iter().enumerate() {
        let (addr, rx) = byte_sink().await;
        servers.push(rx);
        routes.push((
            format!("w{i}.yaml"),
            format!(
                "from:\n  http: {{ path: /w{i} }}\nto:\n  - tcp: {{ connect: \"{addr}\", framing: {}, reply: none, pool: 1 }}\n",
                w.yaml
            ),
        ));
    }
    let f = Ferry::start(&routes).await;
    let c = common::http_client_timeout(WAIT);
    let payloads = payloads();
    for (i, (w, rx)) in wires.iter().zip(servers.iter_mut()).enumerate() {
        let mut carried = 0;
        for (name, p) in &payloads {
            let what = format!("{name} out over {}", w.yaml);
            let r = c
                .post(f.url(&format!("/w{i}")))
                .body(p.clone())
                .send()
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            // A `fixed` sink writes one record per message, so a payload of
            // several records is refused like any other misfit.
            let expected = match w.kind {
                Kind::Fixed(n) if p.len() != n => None,
                _ => frame(&w.kind, p),
            };
            let Some(wire) = expected else {
                assert_eq!(status, 500, "{what}: {text}");
                assert!(text.contains(w.refusal), "{what}: {text}");
                continue;
            };
            assert_eq!(status, 200, "{what}: {text}");
            let mut got = Vec::new();
            while got.len() < wire.len() {
                let chunk = tokio::time::timeout(WAIT, rx.recv())
                    .await
                    .unwrap_or_else(|_| panic!("{what}: {} of {} bytes", got.len(), wire.len()))
                    .unwrap();
                got.extend(chunk);
            }
            assert!(got == wire, "{what}: the bytes on the wire differ");
            carried += 1;
        }
        let want = match w.kind {
            Kind::Fixed(_) => 0,
            _ => w.carries,
        };
        assert_eq!(carried, want, "payloads sent by {}", w.yaml);
    }
    f.engine.shutdown().await;
}
