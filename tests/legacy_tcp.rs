//! End-to-end: real TCP clients against `tcp` sources in every framing,
//! request/reply ordering, limits (frame size, idle, connections), TLS, and
//! the `tcp` sink and `tcp_call` step against real TCP servers.
//!
//! The framing tests write requests and check replies as literal wire bytes
//! (`WIRES`), in both directions (Ferry as server and as client), so a bug
//! that Ferry's encoder and decoder share cannot pass.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a panic is the report; helpers are shared by `mod common`

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{Ferry, closed_port, eventually};
use ferry::codec::framing::{Endian, FrameCodec, Framing, LengthPrefixed};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder, Framed};

const WAIT: Duration = Duration::from_secs(10);

async fn addr(f: &Ferry, route: &str) -> SocketAddr {
    f.engine
        .resources
        .tcp
        .local_addr(route)
        .await
        .unwrap_or_else(|| panic!("route {route} has no tcp listener"))
}

fn encode(framing: &Framing, payload: &[u8]) -> Vec<u8> {
    let mut dst = BytesMut::new();
    framing
        .codec(1 << 20)
        .encode(Bytes::copy_from_slice(payload), &mut dst)
        .unwrap();
    dst.to_vec()
}

/// Read `n` frames (each within the deadline).
async fn read_frames(stream: &mut TcpStream, framing: &Framing, n: usize) -> Vec<Vec<u8>> {
    let mut codec: FrameCodec = framing.codec(1 << 20);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    while out.len() < n {
        if let Some(f) = codec.decode(&mut buf).unwrap() {
            out.push(f.to_vec());
            continue;
        }
        let read = tokio::time::timeout(WAIT, stream.read_buf(&mut buf))
            .await
            .expect("reply within the deadline")
            .unwrap();
        assert!(
            read > 0,
            "connection closed after {} of {n} replies",
            out.len()
        );
    }
    out
}

/// True once the server closed the connection (read returns 0 or an error).
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

fn echo_route(framing_yaml: &str, extra: &str) -> String {
    format!(
        "from:\n  tcp: {{ listen: 127.0.0.1:0, framing: {framing_yaml}, reply: result{extra} }}\n"
    )
}

/// One framing written out by hand: the route's YAML and the literal bytes
/// around an 8-byte payload, as a request and as Ferry's reply. Written
/// without Ferry's codec, so a symmetric bug (wrong byte order, a header that
/// counts itself or not) cannot pass both ways.
struct Wire {
    name: &'static str,
    yaml: &'static str,
    before: &'static [u8],
    after: &'static [u8],
    /// What Ferry writes after a reply, when it differs from `after`.
    reply_after: Option<&'static [u8]>,
}

/// Every framing and every length-header option, for payloads of 8 bytes.
const WIRES: &[Wire] = &[
    Wire {
        name: "lines",
        yaml: "lines",
        before: b"",
        after: b"\n",
        reply_after: None,
    },
    // A CRLF request is accepted; the reply ends with LF.
    Wire {
        name: "lines_crlf_in",
        yaml: "lines",
        before: b"",
        after: b"\r\n",
        reply_after: Some(b"\n"),
    },
    Wire {
        name: "crlf",
        yaml: "lines_crlf",
        before: b"",
        after: b"\n",
        reply_after: Some(b"\r\n"),
    },
    Wire {
        name: "len4be",
        yaml: "{ length_prefixed: { bytes: 4 } }",
        before: b"\x00\x00\x00\x08",
        after: b"",
        reply_after: None,
    },
    Wire {
        name: "len4be_incl",
        yaml: "{ length_prefixed: { bytes: 4, includes_header: true } }",
        before: b"\x00\x00\x00\x0c",
        after: b"",
        reply_after: None,
    },
    Wire {
        name: "len4le",
        yaml: "{ length_prefixed: { bytes: 4, endian: little } }",
        before: b"\x08\x00\x00\x00",
        after: b"",
        reply_after: None,
    },
    Wire {
        name: "len4le_incl",
        yaml: "{ length_prefixed: { bytes: 4, endian: little, includes_header: true } }",
        before: b"\x0c\x00\x00\x00",
        after: b"",
        reply_after: None,
    },
    Wire {
        name: "len2be",
        yaml: "{ length_prefixed: { bytes: 2, endian: big } }",
        before: b"\x00\x08",
        after: b"",
        reply_after: None,
    },
    Wire {
        name: "len2be_incl",
        yaml: "{ length_prefixed: { bytes: 2, includes_header: true } }",
        before: b"\x00\x0a",
        after: b"",
        reply_after: None,
    },
    Wire {
        name: "len2le",
        yaml: "{ length_prefixed: { bytes: 2, endian: little } }",
        before: b"\x08\x00",
        after: b"",
        reply_after: None,
    },
    Wire {
        name: "len2le_incl",
        yaml: "{ length_prefixed: { bytes: 2, endian: little, includes_header: true } }",
        before: b"\x0a\x00",
        after: b"",
        reply_after: None,
    },
    Wire {
        name: "len1",
        yaml: "{ length_prefixed: { bytes: 1 } }",
        before: b"\x08",
        after: b"",
        reply_after: None,
    },
    Wire {
        name: "len1_incl",
        yaml: "{ length_prefixed: { bytes: 1, includes_header: true } }",
        before: b"\x09",
        after: b"",
        reply_after: None,
    },
    Wire {
        name: "len1le",
        yaml: "{ length_prefixed: { bytes: 1, endian: little } }",
        before: b"\x08",
        after: b"",
        reply_after: None,
    },
    Wire {
        name: "stx",
        yaml: "{ delimited: { start: [0x02], end: '\\x03' } }",
        before: b"\x02",
        after: b"\x03",
        reply_after: None,
    },
    Wire {
        name: "end_only",
        yaml: "{ delimited: { end: [0x1c, 0x1c] } }",
        before: b"",
        after: b"\x1c\x1c",
        reply_after: None,
    },
    Wire {
        name: "two_byte_markers",
        yaml: "{ delimited: { start: '<<', end: '>>\\r\\n' } }",
        before: b"<<",
        after: b">>\r\n",
        reply_after: None,
    },
    Wire {
        name: "fixed",
        yaml: "{ fixed: 8 }",
        before: b"",
        after: b"",
        reply_after: None,
    },
    Wire {
        name: "mllp",
        yaml: "mllp",
        before: b"\x0b",
        after: b"\x1c\x0d",
        reply_after: None,
    },
];

impl Wire {
    fn request(&self, payload: &[u8]) -> Vec<u8> {
        assert_eq!(
            payload.len(),
            8,
            "the literal headers are for 8-byte payloads"
        );
        [self.before, payload, self.after].concat()
    }

    fn reply(&self, payload: &[u8]) -> Vec<u8> {
        assert_eq!(
            payload.len(),
            8,
            "the literal headers are for 8-byte payloads"
        );
        [self.before, payload, self.reply_after.unwrap_or(self.after)].concat()
    }
}

#[tokio::test]
async fn every_framing_reads_and_writes_the_literal_wire_bytes_in_any_chunking() {
    let routes: Vec<(String, String)> = WIRES
        .iter()
        .map(|w| (format!("{}.yaml", w.name), echo_route(w.yaml, "")))
        .collect();
    let f = Ferry::start(&routes).await;
    for w in WIRES {
        let payloads: Vec<Vec<u8>> = (0..6)
            .map(|i| format!("frame-{i:02}").into_bytes())
            .collect();
        let mut s = TcpStream::connect(addr(&f, w.name).await).await.unwrap();
        // Three frames in one write…
        let batch: Vec<u8> = payloads[..3].iter().flat_map(|p| w.request(p)).collect();
        s.write_all(&batch).await.unwrap();
        // …then three more, one byte per write.
        for p in &payloads[3..] {
            for b in w.request(p) {
                s.write_all(&[b]).await.unwrap();
                s.flush().await.unwrap();
            }
        }
        let expected: Vec<u8> = payloads.iter().flat_map(|p| w.reply(p)).collect();
        let got = common::read_exactly(&mut s, expected.len(), w.name, WAIT).await;
        assert_eq!(got, expected, "framing {}: replies on the wire", w.name);
    }
    f.engine.shutdown().await;
}

/// A server that expects exactly `request` on each connection and answers
/// `reply`, both literal bytes; returns what it received, for the assertion.
async fn literal_backend(
    request_len: usize,
    reply: Vec<u8>,
) -> (SocketAddr, tokio::sync::mpsc::Receiver<Vec<u8>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut got = vec![0u8; request_len];
            if s.read_exact(&mut got).await.is_err() {
                continue;
            }
            let _ = tx.send(got).await;
            let _ = s.write_all(&reply).await;
        }
    });
    (a, rx)
}

#[tokio::test]
async fn tcp_call_writes_and_reads_the_literal_wire_bytes_of_every_framing() {
    let mut backends = Vec::new();
    let mut routes = Vec::new();
    for w in WIRES {
        // Ferry is the client here: its request is framed as its replies are.
        let sent = w.reply(b"question");
        let (backend, rx) = literal_backend(sent.len(), w.request(b"answer!!")).await;
        routes.push((
            format!("{}.yaml", w.name),
            format!(
                "from:\n  http: {{ path: /{} }}\nsteps:\n  - tcp_call: {{ connect: \"{backend}\", framing: {}, reply: any, timeout: 5s }}\n",
                w.name, w.yaml
            ),
        ));
        backends.push((w.name, sent, rx));
    }
    let f = Ferry::start(&routes).await;
    let client = common::http_client_timeout(WAIT);
    for (name, sent, mut rx) in backends {
        let r = client
            .post(f.url(&format!("/{name}")))
            .body("question")
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert_eq!(
            (status.as_u16(), body.as_str()),
            (200, "answer!!"),
            "{name}"
        );
        let got = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("the backend saw the request")
            .expect("backend running");
        assert_eq!(got, sent, "{name}: request on the wire");
    }
    f.engine.shutdown().await;
}

#[tokio::test]
async fn a_client_closing_mid_frame_loses_only_its_partial_frame() {
    let route = "from:\n  tcp: { listen: 127.0.0.1:0, framing: mllp, reply: none }\nto:\n  - file: { path: \"{dir}/out\", name: frames.txt, append: true }\n";
    let f = Ferry::start(&[("in.yaml", route)]).await;
    let a = addr(&f, "in").await;
    let mut c1 = TcpStream::connect(a).await.unwrap();
    c1.write_all(b"\x0bcomplete\x1c\r\x0bpartial and then gone")
        .await
        .unwrap();
    drop(c1);
    let mut c2 = TcpStream::connect(a).await.unwrap();
    c2.write_all(b"\x0bsecond client\x1c\r").await.unwrap();
    let out = f.path("out/frames.txt");
    let text = eventually("both complete frames", WAIT, || {
        let t = std::fs::read_to_string(&out).ok()?;
        (t.lines().count() == 2).then_some(t)
    })
    .await;
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    assert_eq!(lines, ["complete", "second client"]);
    f.engine.shutdown().await;
}

#[tokio::test]
async fn an_oversized_frame_closes_its_connection_and_the_route_keeps_serving() {
    let f = Ferry::start(&[("echo.yaml", &echo_route("lines", ", max_frame: 16"))]).await;
    let a = addr(&f, "echo").await;
    let mut good = TcpStream::connect(a).await.unwrap();
    let mut bad = TcpStream::connect(a).await.unwrap();
    // Never terminated: the server must not wait for the end of it.
    bad.write_all(&[b'x'; 100]).await.unwrap();
    assert!(
        closed_by_server(&mut bad).await,
        "oversized frame must close the connection"
    );
    good.write_all(b"still here\n").await.unwrap();
    assert_eq!(
        read_frames(&mut good, &Framing::Lines, 1).await,
        [b"still here".to_vec()]
    );
    let mut late = TcpStream::connect(a).await.unwrap();
    late.write_all(b"newcomer\n").await.unwrap();
    assert_eq!(
        read_frames(&mut late, &Framing::Lines, 1).await,
        [b"newcomer".to_vec()]
    );
    f.engine.shutdown().await;
}

#[tokio::test]
async fn an_idle_client_is_disconnected_but_others_are_served() {
    let f = Ferry::start(&[("echo.yaml", &echo_route("lines", ", idle_timeout: 300ms"))]).await;
    let a = addr(&f, "echo").await;
    let mut slow = TcpStream::connect(a).await.unwrap();
    slow.write_all(b"half a li").await.unwrap();
    assert!(
        closed_by_server(&mut slow).await,
        "idle connection must be closed"
    );
    let mut fresh = TcpStream::connect(a).await.unwrap();
    fresh.write_all(b"hi\n").await.unwrap();
    assert_eq!(
        read_frames(&mut fresh, &Framing::Lines, 1).await,
        [b"hi".to_vec()]
    );
    f.engine.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_at_once() {
    let f = Ferry::start(&[("echo.yaml", &echo_route("lines", ", max_connections: 1"))]).await;
    let a = addr(&f, "echo").await;
    let mut first = TcpStream::connect(a).await.unwrap();
    first.write_all(b"one\n").await.unwrap();
    assert_eq!(
        read_frames(&mut first, &Framing::Lines, 1).await,
        [b"one".to_vec()]
    );
    let mut second = TcpStream::connect(a).await.unwrap();
    assert!(closed_by_server(&mut second).await);
    first.write_all(b"two\n").await.unwrap();
    assert_eq!(
        read_frames(&mut first, &Framing::Lines, 1).await,
        [b"two".to_vec()]
    );
    f.engine.shutdown().await;
}

#[tokio::test]
async fn failed_messages_get_the_error_reply_in_their_place() {
    let route = "from:\n  tcp: { listen: 127.0.0.1:0, reply: result, error_reply: 'NAK {kind}: {error}' }\nsteps:\n  - xml_to_json: {}\n";
    let f = Ferry::start(&[("svc.yaml", route)]).await;
    let mut s = TcpStream::connect(addr(&f, "svc").await).await.unwrap();
    s.write_all(b"<a>1</a>\n<a>\n<b>2</b>\n").await.unwrap();
    let replies = read_frames(&mut s, &Framing::Lines, 3).await;
    assert_eq!(replies[0], br#"{"a":"1"}"#);
    let nak = String::from_utf8(replies[1].clone()).unwrap();
    assert!(nak.starts_with("NAK badinput: xml_to_json"), "{nak}");
    assert_eq!(replies[2], br#"{"b":"2"}"#);
    f.engine.shutdown().await;
}

/// A backend that answers each frame `n` with `n-done` after a delay that is
/// longest for the first frames, so answers complete out of order.
async fn slow_backend(framing: Framing) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let framing = framing.clone();
            tokio::spawn(async move {
                let mut conn = Framed::new(s, framing.codec(1 << 20));
                while let Some(Ok(frame)) = conn.next().await {
                    let n: u64 = std::str::from_utf8(&frame).unwrap().parse().unwrap_or(0);
                    tokio::time::sleep(Duration::from_millis(5 * (20 - n.min(20)))).await;
                    let reply = format!("{n}-done");
                    if conn.send(Bytes::from(reply)).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    a
}

#[tokio::test]
async fn pipelined_frames_are_answered_in_order_even_when_processing_finishes_out_of_order() {
    let backend = slow_backend(Framing::Lines).await;
    let route = format!(
        "from:\n  tcp: {{ listen: 127.0.0.1:0, reply: result }}\nconcurrency: 8\nsteps:\n  - tcp_call: {{ connect: \"{backend}\", pool: 8, timeout: 5s }}\n"
    );
    let f = Ferry::start(&[("front.yaml", &route)]).await;
    let mut s = TcpStream::connect(addr(&f, "front").await).await.unwrap();
    let all: String = (0..20).map(|i| format!("{i}\n")).collect();
    s.write_all(all.as_bytes()).await.unwrap();
    let replies = read_frames(&mut s, &Framing::Lines, 20).await;
    let expect: Vec<Vec<u8>> = (0..20).map(|i| format!("{i}-done").into_bytes()).collect();
    assert_eq!(replies, expect);
    f.engine.shutdown().await;
}

/// A server that answers one frame per connection, then hangs up.
async fn one_shot_backend() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut conn = Framed::new(s, Framing::Lines.codec(1024));
                if let Some(Ok(frame)) = conn.next().await {
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let _ = conn.send(frame).await;
                }
            });
        }
    });
    (a, seen)
}

#[tokio::test]
async fn the_sink_reconnects_when_the_peer_closed_a_pooled_connection() {
    let (backend, seen) = one_shot_backend().await;
    let route = format!(
        "from:\n  http: {{ path: /send }}\nto:\n  - tcp: {{ connect: \"{backend}\", reply: any, pool: 1, timeout: 5s }}\nerrors:\n  retry: {{ attempts: 1 }}\n"
    );
    let f = Ferry::start(&[("send.yaml", &route)]).await;
    let client = common::http_client_timeout(WAIT);
    for i in 0..3 {
        let r = client
            .post(f.url("/send"))
            .body(format!("m{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "message {i}");
    }
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 3);
    f.engine.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_retryable_failure() {
    let port = closed_port();
    let route = format!(
        "from:\n  http: {{ path: /send }}\nto:\n  - tcp: {{ connect: \"127.0.0.1:{port}\", timeout: 2s }}\nerrors:\n  retry: {{ attempts: 1 }}\n"
    );
    let f = Ferry::start(&[("send.yaml", &route)]).await;
    let r = common::http_client_timeout(WAIT)
        .post(f.url("/send"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap();
    assert!(body.contains("cannot connect"), "{body}");
    f.engine.shutdown().await;
}

fn fixture(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
        .display()
        .to_string()
}

#[tokio::test]
async fn tls_source_and_tls_client_talk_through_a_plain_front_route() {
    let secure = format!(
        "from:\n  tcp: {{ listen: 127.0.0.1:0, reply: result, tls: {{ cert: \"{}\", key: \"{}\" }} }}\nsteps:\n  - xml_to_json: {{}}\n",
        fixture("server.pem"),
        fixture("server.key")
    );
    let f = Ferry::start(&[("secure.yaml", &secure)]).await;
    let secure_addr = addr(&f, "secure").await;

    // A real TLS client trusting the test CA.
    ferry::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_file_iter(fixture("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(secure_addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let mut conn = Framed::new(tls, Framing::Lines.codec(1024));
    conn.send(Bytes::from_static(b"<hello/>")).await.unwrap();
    let reply = tokio::time::timeout(WAIT, conn.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&reply[..], br#"{"hello":null}"#);

    // A plain client is refused (the handshake fails; the listener lives on).
    let mut plain = TcpStream::connect(secure_addr).await.unwrap();
    plain.write_all(b"hello\n").await.unwrap();
    assert!(closed_by_server(&mut plain).await);

    // tcp_call over TLS, from a second engine's route.
    let front = format!(
        "from:\n  tcp: {{ listen: 127.0.0.1:0, reply: result }}\nsteps:\n  - tcp_call: {{ connect: \"{secure_addr}\", tls: {{ ca: \"{}\", server_name: localhost }} }}\n",
        fixture("ca.pem")
    );
    let g = Ferry::start(&[("front.yaml", &front)]).await;
    let mut s = TcpStream::connect(addr(&g, "front").await).await.unwrap();
    s.write_all(b"<via>front</via>\n").await.unwrap();
    assert_eq!(
        read_frames(&mut s, &Framing::Lines, 1).await,
        [br#"{"via":"front"}"#.to_vec()]
    );
    g.engine.shutdown().await;
    f.engine.shutdown().await;
}

#[tokio::test]
async fn bad_tcp_options_are_load_errors() {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes");
    std::fs::create_dir_all(&routes).unwrap();
    let cases = [
        (
            "a.yaml",
            "from:\n  tcp: { listen: 127.0.0.1:0, framing: { length_prefixed: { bytes: 3 } } }\n",
            "bytes must be 1, 2 or 4",
        ),
        (
            "b.yaml",
            "from:\n  tcp: { listen: 127.0.0.1:0, framing: { delimited: { end: [] } } }\n",
            "at least one byte",
        ),
        (
            "c.yaml",
            "from:\n  tcp: { listen: 127.0.0.1:0, tls: { cert: /nope.pem, key: /nope.key } }\n",
            "cannot read certificates",
        ),
        (
            "d.yaml",
            "from:\n  http: { path: /x }\nsteps:\n  - tcp_call: { connect: nowhere }\n",
            "must be host:port",
        ),
        (
            "e.yaml",
            "from:\n  http: { path: /y }\nsteps:\n  - tcp_call: { connect: \"a:1\", reply: none }\n",
            "tcp_call waits for a reply",
        ),
        (
            "f.yaml",
            "from:\n  tcp: { listen: 127.0.0.1:0, framing: { delimited: { end: \"€\" } } }\n",
            "not a single byte",
        ),
    ];
    for (name, yaml, _) in cases {
        std::fs::write(routes.join(name), yaml).unwrap();
    }
    let loaded = ferry::engine::load(
        &[routes],
        &dir.path().join("connectors"),
        &Default::default(),
    );
    let all: Vec<String> = loaded.errors.iter().map(|e| e.to_string()).collect();
    for (name, _, expect) in cases {
        assert!(
            all.iter().any(|e| e.contains(name) && e.contains(expect)),
            "{name}: expected `{expect}` in {all:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_swaps_the_tcp_route_on_the_same_port_and_old_connections_close_after_answering() {
    let port = closed_port();
    let route = |v: &str| {
        format!(
            "from:\n  tcp: {{ listen: \"127.0.0.1:{port}\", framing: lines, reply: result }}\nsteps:\n  - script: 'body = \"{v}:\" + body;'\n"
        )
    };
    let f = Ferry::start(&[("echo.yaml", &route("v1"))]).await;
    let framing = Framing::Lines;
    let mut before = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    before.write_all(&encode(&framing, b"a")).await.unwrap();
    assert_eq!(
        read_frames(&mut before, &framing, 1).await,
        [b"v1:a".to_vec()]
    );

    std::fs::write(f.path("routes/echo.yaml"), route("v2")).unwrap();
    let report = f.engine.reload().await;
    assert_eq!(report.restarted, ["echo"], "{report:?}");

    // The old version answered everything it took, then closed its
    // connections; the client reconnects (nothing unanswered was acknowledged).
    assert!(closed_by_server(&mut before).await);
    // New connections reach the new version on the same, never-unbound port.
    let mut after = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    after.write_all(&encode(&framing, b"c")).await.unwrap();
    assert_eq!(
        read_frames(&mut after, &framing, 1).await,
        [b"v2:c".to_vec()]
    );
    f.engine.shutdown().await;
}

/// A server that answers each frame with `ok:FRAME` and counts the
/// connections it accepted.
async fn counting_backend(framing: Framing) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let framing = framing.clone();
            tokio::spawn(async move {
                let mut conn = Framed::new(s, framing.codec(1 << 20));
                while let Some(Ok(frame)) = conn.next().await {
                    let mut reply = b"ok:".to_vec();
                    reply.extend_from_slice(&frame);
                    if conn.send(Bytes::from(reply)).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (a, accepted)
}

/// Send `n` messages at once through the http route and `n` pipelined frames
/// through the tcp route; every one must come back answered by the backend.
async fn exercise_both_routes(f: &Ferry, n: usize) {
    let client = common::http_client_timeout(WAIT);
    let posts = (0..n).map(|i| {
        let req = client.post(f.url("/send")).body(format!("s{i}")).send();
        async move { req.await.unwrap().status() }
    });
    let mut s = TcpStream::connect(addr(f, "front").await).await.unwrap();
    let frames: String = (0..n).map(|i| format!("c{i}\n")).collect();
    s.write_all(frames.as_bytes()).await.unwrap();
    let (statuses, replies) = tokio::join!(
        futures_util::future::join_all(posts),
        read_frames(&mut s, &Framing::Lines, n)
    );
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let expect: Vec<Vec<u8>> = (0..n).map(|i| format!("ok:c{i}").into_bytes()).collect();
    assert_eq!(replies, expect);
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_using_one_tcp_connector_share_its_pool_across_reloads() {
    let (backend, accepted) = counting_backend(Framing::Lines).await;
    let connector =
        |timeout: &str| format!("kind: tcp\nconnect: \"{backend}\"\npool: 1\ntimeout: {timeout}\n");
    let front = "from:\n  tcp: { listen: 127.0.0.1:0, reply: result }\nconcurrency: 4\nsteps:\n  - tcp_call: { connector: backend }\n";
    let send = |description: &str| {
        format!(
            "description: {description}\nfrom:\n  http: {{ path: /send }}\nconcurrency: 4\nto:\n  - tcp: {{ connector: backend, reply: any }}\n"
        )
    };
    let f = Ferry::start_with_connectors(
        &[("front.yaml", front), ("send.yaml", &send("v1"))],
        &[("backend.yaml", &connector("5s"))],
    )
    .await;
    let total = || accepted.load(std::sync::atomic::Ordering::SeqCst);

    exercise_both_routes(&f, 8).await;
    // Sixteen calls from two routes, four workers each, over `pool: 1`.
    assert_eq!(total(), 1, "the sink and tcp_call share one connection");

    // Reloading one route keeps the pool the other route still holds.
    std::fs::write(f.path("routes/send.yaml"), send("v2")).unwrap();
    let report = f.engine.reload().await;
    assert_eq!(report.restarted, ["send"], "{report:?}");
    exercise_both_routes(&f, 4).await;
    assert_eq!(total(), 1, "a route reload does not drop the shared pool");

    // A changed connector file restarts both routes on a new pool.
    std::fs::write(f.path("connectors/backend.yaml"), connector("6s")).unwrap();
    let report = f.engine.reload().await;
    let mut restarted = report.restarted.clone();
    restarted.sort();
    assert_eq!(restarted, ["front", "send"], "{report:?}");
    exercise_both_routes(&f, 4).await;
    assert_eq!(total(), 2, "the changed connector got one new connection");
    f.engine.shutdown().await;
}

#[tokio::test]
async fn route_options_override_the_tcp_connector() {
    let len4 = Framing::LengthPrefixed(LengthPrefixed {
        bytes: 4,
        endian: Endian::Big,
        includes_header: false,
    });
    let (backend, accepted) = counting_backend(len4).await;
    // The connector points elsewhere, with another framing and a tiny frame
    // limit; the route's own options must win over all three.
    let port = closed_port();
    let connector = format!(
        "kind: tcp\nconnect: \"127.0.0.1:{port}\"\nframing: lines\nmax_frame: 2\ntimeout: 5s\n"
    );
    let front = format!(
        "from:\n  tcp: {{ listen: 127.0.0.1:0, reply: result }}\nsteps:\n  - tcp_call: {{ connector: legacy, connect: \"{backend}\", framing: {{ length_prefixed: {{ bytes: 4 }} }}, max_frame: 1KiB }}\n"
    );
    let f = Ferry::start_with_connectors(&[("front.yaml", &front)], &[("legacy.yaml", &connector)])
        .await;
    let mut s = TcpStream::connect(addr(&f, "front").await).await.unwrap();
    s.write_all(b"hello\n").await.unwrap();
    assert_eq!(
        read_frames(&mut s, &Framing::Lines, 1).await,
        [b"ok:hello".to_vec()]
    );
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    f.engine.shutdown().await;
}

#[tokio::test]
async fn tcp_connector_mistakes_are_load_errors_at_their_position() {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes");
    let connectors = dir.path().join("connectors");
    std::fs::create_dir_all(&routes).unwrap();
    std::fs::create_dir_all(&connectors).unwrap();
    std::fs::write(
        connectors.join("web.yaml"),
        "kind: http\nbase_url: http://x\n",
    )
    .unwrap();
    std::fs::write(connectors.join("noaddr.yaml"), "kind: tcp\npool: 2\n").unwrap();
    // (file, route, what the error must say: position first)
    let cases = [
        (
            "missing.yaml",
            "from:\n  http: { path: /a }\nto:\n  - tcp: { connector: nope }\n",
            vec!["missing.yaml:4:23: connector `nope` not found"],
        ),
        (
            "kind.yaml",
            "from:\n  http: { path: /b }\nsteps:\n  - tcp_call: { connector: web }\n",
            vec![
                "kind.yaml:4:28: connector `web`",
                "is of kind `http`, but this endpoint is `tcp`",
            ],
        ),
        (
            "noconnect.yaml",
            "from:\n  http: { path: /c }\nsteps:\n  - tcp_call: { connector: noaddr }\n",
            vec![
                "noconnect.yaml:4:5: tcp_call needs `connect: host:port` (connector `noaddr` does not set it)",
            ],
        ),
        (
            "bare.yaml",
            "from:\n  http: { path: /d }\nto:\n  - tcp: { pool: 2 }\n",
            vec!["bare.yaml:4:5: tcp needs `connect: host:port` (or a `connector` that sets it)"],
        ),
    ];
    for (name, yaml, _) in &cases {
        std::fs::write(routes.join(name), yaml).unwrap();
    }
    let loaded = ferry::engine::load(&[routes], &connectors, &Default::default());
    let all: Vec<String> = loaded.errors.iter().map(|e| e.to_string()).collect();
    for (_, _, expect) in &cases {
        assert!(
            all.iter()
                .any(|e| expect.iter().all(|part| e.contains(part))),
            "expected {expect:?} in {all:#?}"
        );
    }
}
