//! End-to-end: every EDI sample of the corpus (`edi/`: X12, EDIFACT,
//! TRADACOMS, and one UTF-16 XML form) passes through Ferry byte for byte
//! over a file route, an HTTP route and a length-prefixed TCP route.
//!
//! Why: Ferry does not parse EDI, so the promise is pass-through. EDI is
//! fragile to "helpful" changes: a UTF-8 BOM dropped, CRLF normalised, a
//! trailing newline added or removed, an `~` segment terminator without a
//! line break. Every file is compared whole with the bytes on disk; the
//! frames on the TCP side are built and read here by hand, not with Ferry's
//! codec, so a symmetric framing bug cannot hide.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a panic is the report; helpers are shared by `mod common`

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Ferry, corpus, eventually, files_in};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(30);

/// Every data file under `edi/` (licences left out), as (name, bytes).
fn edi_files() -> Vec<(String, Vec<u8>)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.file_name().unwrap() != "LICENSE" {
                out.push(p);
            }
        }
    }
    let mut paths = Vec::new();
    walk(&corpus("edi"), &mut paths);
    paths.sort();
    let files: Vec<(String, Vec<u8>)> = paths
        .iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(p).unwrap(),
            )
        })
        .collect();
    assert_eq!(files.len(), 79, "edi-net has 48 files, x12-imsweb 31");
    let mut names: Vec<&String> = files.iter().map(|f| &f.0).collect();
    names.dedup();
    assert_eq!(names.len(), 79, "file names are unique");
    // The sample must hold what makes pass-through hard.
    let bom = files
        .iter()
        .filter(|f| f.1.starts_with(b"\xEF\xBB\xBF"))
        .count();
    let no_final_lf = files.iter().filter(|f| !f.1.ends_with(b"\n")).count();
    assert_eq!(
        (bom, no_final_lf),
        (22, 44),
        "BOMs, files without a final LF"
    );
    files
}

#[tokio::test]
async fn edi_files_dropped_in_a_folder_come_out_byte_for_byte() {
    let route = "from:\n  file: { path: \"{dir}/in\", glob: \"*\", settle: 100ms, poll_interval: 100ms }\nto:\n  - file: { path: \"{dir}/out\", name: \"{header.file.name}\" }\n";
    let f = Ferry::start(&[("edi.yaml", route)]).await;
    let files = edi_files();
    for (name, bytes) in &files {
        std::fs::write(f.path("in").join(name), bytes).unwrap();
    }
    let out = f.path("out");
    eventually("79 files in out/", WAIT, || {
        (files_in(&out).len() == files.len()).then_some(())
    })
    .await;
    for (name, bytes) in &files {
        let got = std::fs::read(out.join(name)).unwrap();
        assert!(
            got == *bytes,
            "{name}: {} bytes out, {} in",
            got.len(),
            bytes.len()
        );
    }
    let done = f.path("in/.done");
    eventually("79 files in in/.done", WAIT, || {
        (files_in(&done).len() == files.len()).then_some(())
    })
    .await;
    f.engine.shutdown().await;
}

/// An HTTP server that keeps each request body as raw bytes, keyed by the
/// `x-name` header (common::Downstream keeps text, which would refuse the
/// UTF-16 file).
async fn capture_server() -> (String, Arc<Mutex<BTreeMap<String, Vec<u8>>>>) {
    let seen: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Arc::default();
    let state = seen.clone();
    let app = axum::Router::new().fallback(
        move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let seen = state.clone();
            async move {
                let name = headers
                    .get("x-name")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("?")
                    .to_string();
                seen.lock().unwrap().insert(name, body.to_vec());
                "ok"
            }
        },
    );
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/edi", tcp.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(tcp, app).await.unwrap() });
    (url, seen)
}

#[tokio::test]
async fn edi_files_posted_over_http_reach_the_downstream_byte_for_byte() {
    let (url, seen) = capture_server().await;
    let route = format!(
        "from:\n  http: {{ path: /edi }}\nto:\n  - http: {{ url: \"{url}\", forward_headers: [x-name] }}\n"
    );
    let f = Ferry::start(&[("edi.yaml", &route)]).await;
    let c = common::http_client_timeout(WAIT);
    let files = edi_files();
    for (name, bytes) in &files {
        let r = c
            .post(f.url("/edi"))
            .header("x-name", name.as_str())
            .body(bytes.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.status().as_u16(), 200, "{name}");
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), files.len());
    for (name, bytes) in &files {
        assert!(
            seen[name] == *bytes,
            "{name}: {} bytes out",
            seen[name].len()
        );
    }
    f.engine.shutdown().await;
}

/// Read one frame with a 4-byte little-endian length that counts itself.
async fn read_le_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 4];
    tokio::time::timeout(WAIT, s.read_exact(&mut len))
        .await
        .expect("a frame header within the deadline")
        .unwrap();
    let mut payload = vec![0u8; u32::from_le_bytes(len) as usize - 4];
    tokio::time::timeout(WAIT, s.read_exact(&mut payload))
        .await
        .expect("the frame's payload within the deadline")
        .unwrap();
    payload
}

#[tokio::test]
async fn edi_files_sent_length_prefixed_over_tcp_arrive_byte_for_byte() {
    // The far end: frames with a 4-byte little-endian length that includes
    // itself, so the route has to re-frame, not copy the stream.
    let far = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let far_addr = far.local_addr().unwrap();
    let received = tokio::spawn(async move {
        let (mut s, _) = far.accept().await.unwrap();
        let mut frames = Vec::new();
        for _ in 0..79 {
            frames.push(read_le_frame(&mut s).await);
        }
        frames
    });
    let route = format!(
        "from:\n  tcp: {{ listen: 127.0.0.1:0, framing: {{ length_prefixed: {{ bytes: 4 }} }}, reply: result }}\nto:\n  - tcp: {{ connect: \"{far_addr}\", framing: {{ length_prefixed: {{ bytes: 4, endian: little, includes_header: true }} }}, pool: 1 }}\n"
    );
    let f = Ferry::start(&[("edi.yaml", &route)]).await;
    let listen = f.engine.resources.tcp.local_addr("edi").await.unwrap();
    let mut s = TcpStream::connect(listen).await.unwrap();
    let files = edi_files();
    for (name, bytes) in &files {
        // 4-byte big-endian length, payload: written by hand.
        let mut frame = (bytes.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(bytes);
        s.write_all(&frame).await.unwrap();
        let mut len = [0u8; 4];
        tokio::time::timeout(WAIT, s.read_exact(&mut len))
            .await
            .unwrap_or_else(|_| panic!("{name}: no reply within the deadline"))
            .unwrap();
        let mut reply = vec![0u8; u32::from_be_bytes(len) as usize];
        tokio::time::timeout(WAIT, s.read_exact(&mut reply))
            .await
            .unwrap_or_else(|_| panic!("{name}: reply cut short"))
            .unwrap();
        assert!(
            reply == *bytes,
            "{name}: the reply differs ({} bytes)",
            reply.len()
        );
    }
    let frames = tokio::time::timeout(WAIT, received)
        .await
        .expect("79 frames at the far end")
        .unwrap();
    // One pooled connection and one message at a time: the order is kept.
    for ((name, bytes), got) in files.iter().zip(&frames) {
        assert!(got == bytes, "{name}: {} bytes at the far end", got.len());
    }
    f.engine.shutdown().await;
}
