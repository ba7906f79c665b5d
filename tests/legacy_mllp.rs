//! End-to-end: HL7 v2 over MLLP from a real TCP client. The corpus messages
//! (as stored and with LF rewritten to CR) become JSON files and each gets an
//! ACK carrying its own control id; failures get AE/AR; broken and hostile
//! inputs get a NAK and never stop the listener. The expected ACK code and
//! reason of each broken or fuzzed corpus file is pinned by file name, so one
//! fix plus one new failure cannot pass as "the same count".
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a panic is the report; helpers are shared by `mod common`

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::BytesMut;
use common::{Ferry, closed_port, corpus, files_in};
use ferry::codec::framing::Framing;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

const WAIT: Duration = Duration::from_secs(10);

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "hl7")
                || d.to_string_lossy().contains("BadInputs")
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A client speaking MLLP: one message out, one ACK back.
struct Client {
    stream: TcpStream,
    codec: ferry::codec::framing::FrameCodec,
    buf: BytesMut,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        Client {
            stream: TcpStream::connect(addr).await.unwrap(),
            codec: Framing::Mllp.codec(1 << 20),
            buf: BytesMut::new(),
        }
    }

    async fn send(&mut self, payload: &[u8]) -> String {
        let mut frame = vec![0x0b];
        frame.extend_from_slice(payload);
        frame.extend_from_slice(b"\x1c\r");
        self.stream.write_all(&frame).await.unwrap();
        self.read_ack().await
    }

    async fn read_ack(&mut self) -> String {
        loop {
            if let Some(f) = self.codec.decode(&mut self.buf).unwrap() {
                return String::from_utf8(f.to_vec()).unwrap();
            }
            let n = tokio::time::timeout(WAIT, self.stream.read_buf(&mut self.buf))
                .await
                .expect("an ACK within the deadline")
                .unwrap();
            assert!(n > 0, "connection closed instead of an ACK");
        }
    }
}

/// MSA-1 and MSA-2 of an ACK, read without Ferry's parser.
fn msa(ack: &str) -> (String, String) {
    let line = ack
        .split('\r')
        .find(|s| s.starts_with("MSA"))
        .unwrap_or_else(|| panic!("no MSA in {ack:?}"));
    let f: Vec<&str> = line.split('|').collect();
    (f[1].to_string(), f.get(2).unwrap_or(&"").to_string())
}

/// MSH-10 and the number of segments of a stored message, read independently.
fn expected(text: &str) -> (String, usize) {
    let text = text.trim_start_matches('\u{feff}');
    let lines: Vec<&str> = text
        .split(['\r', '\n'])
        .filter(|l| !l.trim().is_empty())
        .collect();
    let first_msh = lines
        .iter()
        .find(|l| l.starts_with("MSH"))
        .unwrap_or(&lines[0]);
    let msh: Vec<&str> = first_msh.split('|').collect();
    (msh.get(9).unwrap_or(&"").to_string(), lines.len())
}

async fn tcp_addr(f: &Ferry, route: &str) -> SocketAddr {
    f.engine.resources.tcp.local_addr(route).await.unwrap()
}

const FEED: &str = r#"
from:
  tcp: { listen: 127.0.0.1:0, framing: mllp }
concurrency: 4
steps:
  - hl7_to_json: {}
to:
  - file: { path: "{dir}/out", name: "{id}.json" }
"#;

/// Corpus messages with a line break inside a field (e.g. TX OML: `OBR-4`
/// continues on the next line), which no segment split can read.
const BROKEN: &[&str] = &["TX/001_TX_OML_O21.hl7"];

#[tokio::test]
async fn corpus_messages_become_json_and_each_ack_carries_its_control_id() {
    let f = Ferry::start(&[("feed.yaml", FEED)]).await;
    let mut client = Client::connect(tcp_addr(&f, "feed").await).await;
    let mut files: Vec<PathBuf> = files_under(&corpus("hl7"));
    files.extend(
        files_under(&corpus("hl7-cdc/examples"))
            .into_iter()
            .filter(|p| !p.to_string_lossy().contains("Test/Message")),
    );
    assert!(
        files.len() > 150,
        "expected the HL7 corpus, found {} files",
        files.len()
    );
    let mut want: BTreeMap<(String, usize), usize> = BTreeMap::new();
    let mut sent = 0;
    let mut refused = Vec::new();
    for path in &files {
        let stored = std::fs::read_to_string(path).unwrap();
        let cr = stored.replace("\r\n", "\r").replace('\n', "\r");
        for variant in [&stored, &cr] {
            let ack = client.send(variant.as_bytes()).await;
            let (code, control) = msa(&ack);
            let (id, segments) = expected(variant);
            if BROKEN.iter().any(|b| path.ends_with(b)) {
                // A line break inside a field: refused with the reason, not guessed at.
                assert_eq!(code, "AE", "{}: {ack:?}", path.display());
                assert!(ack.contains("is not a segment name"), "{ack:?}");
                assert_eq!(control, id);
                refused.push(path.clone());
                continue;
            }
            assert_eq!(code, "AA", "{}: {ack:?}", path.display());
            assert_eq!(control, id, "{}: ACK must echo MSH-10", path.display());
            assert!(ack.contains("|ACK"), "{}: {ack:?}", path.display());
            *want.entry((id, segments)).or_default() += 1;
            sent += 1;
        }
    }
    assert_eq!(refused.len(), 2 * BROKEN.len());
    // The ACK came after delivery: every JSON file is already written.
    let written = files_in(&f.path("out"));
    assert_eq!(written.len(), sent);
    let mut got: BTreeMap<(String, usize), usize> = BTreeMap::new();
    for p in written {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        let segs = v["segments"].as_array().unwrap();
        let msh = segs
            .iter()
            .find(|s| s["segment"] == "MSH")
            .expect("an MSH segment");
        let id = msh["10"].as_str().unwrap_or("").to_string();
        *got.entry((id, segs.len())).or_default() += 1;
    }
    assert_eq!(
        got, want,
        "JSON files must hold every message with all its segments"
    );
    f.engine.shutdown().await;
}

#[tokio::test]
async fn a_failing_sink_gets_ae_with_the_error_and_the_control_id() {
    let route = format!(
        "from:\n  tcp: {{ listen: 127.0.0.1:0, framing: mllp }}\nto:\n  - http: {{ url: \"http://127.0.0.1:{}/x\", timeout: 2s }}\nerrors:\n  retry: {{ attempts: 1 }}\n",
        closed_port()
    );
    let f = Ferry::start(&[("down.yaml", &route)]).await;
    let mut client = Client::connect(tcp_addr(&f, "down").await).await;
    let msg = std::fs::read_to_string(corpus("hl7/ADT-A01-01.hl7"))
        .unwrap()
        .replace('\n', "\r");
    let ack = client.send(msg.as_bytes()).await;
    let (code, control) = msa(&ack);
    assert_eq!(code, "AE", "{ack:?}");
    assert_eq!(control, expected(&msg).0);
    assert!(ack.contains("sink 1 (http"), "error text in MSA-3: {ack:?}");
    assert!(
        ack.contains("\rERR|||207^Application internal error^HL70357|E|"),
        "{ack:?}"
    );
    // The connection is still usable.
    let again = client.send(msg.as_bytes()).await;
    assert_eq!(msa(&again).0, "AE");
    f.engine.shutdown().await;
}

#[tokio::test]
async fn cdc_test_messages_are_refused_with_a_reason_and_the_connection_survives() {
    let route = r#"
from:
  tcp: { listen: 127.0.0.1:0, framing: mllp }
steps:
  - hl7_to_json: { require: [MSH-6], versions: ["2.5.1"], check_numeric_values: true }
to:
  - file: { path: "{dir}/out" }
"#;
    let f = Ferry::start(&[("strict.yaml", route)]).await;
    let mut client = Client::connect(tcp_addr(&f, "strict").await).await;
    let expect = [
        ("empty.hl7", "AR", "empty message"),
        ("msh_present_but_missing_all_fields.hl7", "AR", "MSH-2"),
        ("msh_present_but_missing_msh-2.hl7", "AR", "MSH-2"),
        ("msh_present_but_missing_msh-9.hl7", "AR", "MSH-9"),
        ("msh_present_but_missing_msh-10.hl7", "AR", "MSH-10"),
        ("msh_present_but_missing_msh-6.hl7", "AE", "MSH-6"),
        ("msh-12_has_value_2_3.hl7", "AE", "version `2.3`"),
        ("orm_obx-5_is_not_a_numeric_value.hl7", "AE", "not a number"),
    ];
    let dir = corpus("hl7-cdc/examples/Test/Message");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), expect.len());
    for (file, code, why) in expect {
        let text = std::fs::read_to_string(dir.join(file))
            .unwrap()
            .replace('\n', "\r");
        let ack = client.send(text.as_bytes()).await;
        let (got, control) = msa(&ack);
        assert_eq!(got, code, "{file}: {ack:?}");
        assert!(
            ack.contains(why),
            "{file}: reason `{why}` missing in {ack:?}"
        );
        if file == "msh_present_but_missing_msh-2.hl7" {
            assert_eq!(control, "111111", "MSH-10 is still echoed");
        }
    }
    // An empty frame did not kill the connection: a good message still passes.
    let good = std::fs::read_to_string(corpus("hl7-cdc/examples/CA/002_CA_ORU_R01.hl7")).unwrap();
    let strict_ok = client.send(good.as_bytes()).await;
    assert_eq!(
        msa(&strict_ok),
        ("AA".into(), "220220550".into()),
        "{strict_ok:?}"
    );
    // Only the good message was delivered (and the folder is the right one).
    assert_eq!(
        files_in(&f.path("out")).len(),
        1,
        "refused messages must not be delivered"
    );
    f.engine.shutdown().await;
}

/// What Ferry answers to each nHapi fuzzer input (path under `BadInputs/`):
/// MSA-1 and a piece of MSA-3. nHapi hung, overflowed its stack or threw on
/// these; Ferry must refuse each one with the reason that applies to it.
const NHAPI_BAD_INPUTS: &[(&str, &str, &str)] = &[
    (
        "LegacyPipeParser/EncodingNotSupportedException/aoor1",
        "AR",
        "empty message",
    ),
    (
        "LegacyPipeParser/EncodingNotSupportedException/nullref1",
        "AR",
        ENC4,
    ),
    ("LegacyPipeParser/HL7Exception/hang1", "AR", ENC4),
    ("LegacyPipeParser/HL7Exception/ioor1", "AR", ENC4),
    ("LegacyPipeParser/HL7Exception/stackoverflow1", "AR", ENC4),
    ("LegacyPipeParser/HL7Exception/stackoverflow2", "AR", ENC4),
    ("LegacyPipeParser/HL7Exception/sys1", "AR", ENC4),
    ("LegacyPipeParser/HL7Exception/sys2", "AR", ENC4),
    ("LegacyPipeParser/NoException/regex1", "AR", DISTINCT),
    (
        "PipeParser/EncodingNotSupportedException/id_000014,sig_02,src_000480+000349,op_splice,rep_32",
        "AR",
        NO_MSH,
    ),
    (
        "PipeParser/EncodingNotSupportedException/id_000213,sig_02,src_001353+000130,op_splice,rep_8",
        "AR",
        NO_MSH,
    ),
    (
        "PipeParser/HL7Exception/id_000001,sig_02,src_000000,op_havoc,rep_16",
        "AR",
        DISTINCT,
    ),
    (
        "PipeParser/HL7Exception/id_000029,sig_02,src_000167+001027,op_splice,rep_8",
        "AR",
        ENC4,
    ),
    (
        "PipeParser/HL7Exception/id_000042,sig_02,src_000334+000148,op_splice,rep_4",
        "AR",
        DISTINCT,
    ),
    (
        "PipeParser/HL7Exception/id_000055,sig_02,src_000959+000226,op_splice,rep_16",
        "AR",
        DISTINCT,
    ),
    (
        "PipeParser/HL7Exception/id_000064,sig_02,src_000051+000380,op_splice,rep_16",
        "AR",
        ENC4,
    ),
    (
        "PipeParser/HL7Exception/id_000087,sig_02,src_000967+001832,op_splice,rep_2",
        "AR",
        ENC4,
    ),
    (
        "PipeParser/HL7Exception/id_000092,sig_02,src_001582+001861,op_splice,rep_16",
        "AE",
        "segment 3: `00` is not a segment name",
    ),
    (
        "PipeParser/HL7Exception/id_000099,sig_02,src_004226+004602,op_splice,rep_4",
        "AR",
        DISTINCT,
    ),
    (
        "PipeParser/HL7Exception/id_000118,sig_02,src_001039+002153,op_splice,rep_16",
        "AR",
        ENC4,
    ),
    (
        "PipeParser/HL7Exception/id_000119,sig_02,src_001911,op_havoc,rep_64",
        "AR",
        DISTINCT,
    ),
    (
        "PipeParser/HL7Exception/id_000123,sig_02,src_000372+002313,op_splice,rep_8",
        "AR",
        DISTINCT,
    ),
    (
        "PipeParser/HL7Exception/id_000125,sig_02,src_004230+004691,op_splice,rep_16",
        "AR",
        DISTINCT,
    ),
    (
        "PipeParser/HL7Exception/id_000149,sig_02,src_004338+004594,op_splice,rep_4",
        "AR",
        DISTINCT,
    ),
    (
        "PipeParser/HL7Exception/id_000151,sig_02,src_001351,op_havoc,rep_2",
        "AR",
        ENC4,
    ),
    (
        "PipeParser/HL7Exception/id_000160,sig_02,src_004804+004815,op_splice,rep_8",
        "AR",
        DISTINCT,
    ),
    (
        "PipeParser/HL7Exception/id_000172,sig_02,src_001146+002011,op_splice,rep_16",
        "AR",
        ENC4,
    ),
    (
        "PipeParser/HL7Exception/id_000176,sig_02,src_002656+002699,op_splice,rep_32",
        "AR",
        DISTINCT,
    ),
    (
        "PipeParser/HL7Exception/id_000205,sig_02,src_001449,op_havoc,rep_2",
        "AR",
        DISTINCT,
    ),
    ("PipeParser/HL7Exception/so", "AR", DISTINCT),
    ("PipeParser/HL7Exception/so2", "AR", DISTINCT),
    ("PipeParser/HL7Exception/so3", "AR", DISTINCT),
    ("PipeParser/HL7Exception/so4", "AR", DISTINCT),
    ("PipeParser/HL7Exception/so5", "AR", DISTINCT),
    (
        "PipeParser/NoException/id_000109,sig_02,src_001098+002192,op_splice,rep_4",
        "AE",
        "segment 4: `  ` is not a segment name",
    ),
    (
        "PipeParser/NoException/id_000146,sig_02,src_000682+002159,op_splice,rep_4",
        "AR",
        "required field MSH-10 (control id) is empty",
    ),
    (
        "PipeParser/NoException/id_000168,sig_02,src_002426+002144,op_splice,rep_8",
        "AR",
        DISTINCT,
    ),
];
const ENC4: &str = "MSH-2 must hold 4 encoding characters";
const DISTINCT: &str = "must be distinct and not letters, digits or spaces";
const NO_MSH: &str = "message does not start with an MSH segment";

#[tokio::test]
async fn each_nhapi_fuzzer_input_gets_its_exact_nak_and_the_listener_survives() {
    let f = Ferry::start(&[("feed.yaml", FEED)]).await;
    let addr = tcp_addr(&f, "feed").await;
    let dir = corpus("hl7-nhapi/tests/NHapi.NUnit/TestData/BadInputs");
    let found: Vec<String> = files_under(&dir)
        .iter()
        .map(|p| p.strip_prefix(&dir).unwrap().display().to_string())
        .collect();
    let listed: Vec<String> = NHAPI_BAD_INPUTS
        .iter()
        .map(|(name, _, _)| name.to_string())
        .collect();
    assert_eq!(found, listed, "the nHapi BadInputs folder changed");
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    for (name, code, why) in NHAPI_BAD_INPUTS {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let mut client = Client::connect(addr).await;
        let ack = client.send(&bytes).await;
        let (got, _) = msa(&ack);
        assert_eq!(
            (got.as_str(), ack.contains(why)),
            (*code, true),
            "{name}: {ack:?}"
        );
        *codes.entry(got).or_default() += 1;
    }
    // The figure in docs/legacy.md.
    let want: BTreeMap<String, usize> = [("AE".to_string(), 2), ("AR".to_string(), 35)].into();
    assert_eq!(codes, want);
    assert!(
        files_in(&f.path("out")).is_empty(),
        "AR never enters the route and AE is a failure: nothing may be written"
    );
    let mut client = Client::connect(addr).await;
    let good = std::fs::read_to_string(corpus("hl7/ORU-R01-01.hl7")).unwrap();
    assert_eq!(msa(&client.send(good.as_bytes()).await).0, "AA");
    assert_eq!(
        files_in(&f.path("out")).len(),
        1,
        "the good message is written"
    );
    f.engine.shutdown().await;
}
