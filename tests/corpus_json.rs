//! End-to-end: nst/JSONTestSuite (`json-test-suite/` in the corpus) through
//! real HTTP routes whose first step parses the body as JSON.
//!
//! Why: every route that reads JSON (`jsonpath`, `set_header`, `json_to_xml`,
//! `csv`/`fixed_width`/`json_to_hl7` formatting) goes through the same body
//! parse, and the suite is the independent verdict on it: every `y_` document
//! must be accepted, every `n_` one refused with 400 and a position, and the
//! `i_` ones (implementation-defined) must go a known way, pinned by name here
//! so that a change in either direction fails. `test_transform/` pins what
//! the re-serialised JSON and the XML look like for values parsers disagree on
//! (duplicate keys, huge numbers, `-0`, lone surrogates); docs/corpus.md
//! documents the same table.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a panic is the report; helpers are shared by `mod common`

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Ferry, corpus};
use serde_json::Value;

/// `jsonpath: "$"` parses the body and hands it back as it is.
const JSON_ROUTE: &str = "from:\n  http: { path: /json }\nsteps:\n  - jsonpath: \"$\"\n";
const XML_ROUTE: &str =
    "from:\n  http: { path: /xml }\nsteps:\n  - json_to_xml: { root: doc, declaration: false }\n";

/// The `i_` files Ferry accepts: numbers it can represent after rounding.
/// Every other `i_` file is refused.
const I_ACCEPTED: &[(&str, &str)] = &[
    ("i_number_double_huge_neg_exp.json", "[0.0]"),
    ("i_number_real_underflow.json", "[0.0]"),
    ("i_number_too_big_neg_int.json", "[-1.2312312312312312e+29]"),
    ("i_number_too_big_pos_int.json", "[1e+20]"),
    // The correctly rounded double (Python's float() of the integer agrees);
    // serde_json without `float_roundtrip` gives ...7687e+47, one ulp off.
    (
        "i_number_very_big_negative_int.json",
        "[-2.374623746732769e+47]",
    ),
];

/// `y_` files that parse but cannot become XML, with the reason's key words.
const Y_NOT_XML: &[(&str, &str)] = &[
    (
        "y_object_empty_key.json",
        "cannot make an XML element name from key `` at $",
    ),
    (
        "y_object_escaped_null_in_key.json",
        "cannot make an XML element name from key `foo\u{0}bar` at $",
    ),
    (
        "y_string_allowed_escapes.json",
        "character U+0008 cannot appear in XML 1.0",
    ),
    (
        "y_string_escaped_control_character.json",
        "character U+0012 cannot appear in XML 1.0",
    ),
    (
        "y_string_escaped_noncharacter.json",
        "character U+FFFF cannot appear in XML 1.0",
    ),
    (
        "y_string_nonCharacterInUTF-8_U+FFFF.json",
        "character U+FFFF cannot appear in XML 1.0",
    ),
    (
        "y_string_null_escape.json",
        "character U+0000 cannot appear in XML 1.0",
    ),
    (
        "y_string_unicode_U+FFFE_nonchar.json",
        "character U+FFFE cannot appear in XML 1.0",
    ),
];

fn files(dir: &str, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(corpus(dir))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    v.sort();
    v
}

fn name(p: &std::path::Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn client() -> reqwest::Client {
    common::http_client_timeout(Duration::from_secs(10))
}

/// POST the file; a hang or a dropped connection fails with the file's name.
async fn post(
    c: &reqwest::Client,
    f: &Ferry,
    route: &str,
    file: &std::path::Path,
) -> (u16, Vec<u8>) {
    let r = c
        .post(f.url(route))
        .body(std::fs::read(file).unwrap())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}: no answer from {route}: {e}", name(file)));
    let status = r.status().as_u16();
    (status, r.bytes().await.unwrap().to_vec())
}

/// The `error` of a 400 reply, checked to be a JSON parse error with a position.
fn parse_error(file: &str, status: u16, body: &[u8], step: &str) -> String {
    assert_eq!(status, 400, "{file}: {}", String::from_utf8_lossy(body));
    let v: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(v["stage"], format!("step 1 ({step})"), "{file}");
    let err = v["error"].as_str().unwrap().to_string();
    let (head, pos) = err.rsplit_once(" at line ").unwrap_or(("", ""));
    assert!(
        head.starts_with(&format!("{step}: body is not valid JSON: "))
            && pos
                .split_once(" column ")
                .is_some_and(|(l, c)| { l.parse::<u32>().is_ok() && c.parse::<u32>().is_ok() }),
        "{file}: error does not name the line and column: {err}"
    );
    err
}

#[tokio::test]
async fn every_y_json_file_is_accepted_as_the_same_value() {
    let f = Ferry::start(&[("json.yaml", JSON_ROUTE)]).await;
    let c = client();
    let ys = files("json-test-suite/test_parsing", "y_");
    assert_eq!(ys.len(), 95);
    for p in &ys {
        let (status, body) = post(&c, &f, "/json", p).await;
        assert_eq!(
            status,
            200,
            "{}: {}",
            name(p),
            String::from_utf8_lossy(&body)
        );
        let got: Value = serde_json::from_slice(&body).unwrap();
        let sent: Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        assert_eq!(got, sent, "{}", name(p));
    }
    f.engine.shutdown().await;
}

#[tokio::test]
async fn every_n_json_file_is_refused_with_400_naming_line_and_column() {
    let f = Ferry::start(&[("json.yaml", JSON_ROUTE), ("xml.yaml", XML_ROUTE)]).await;
    let c = client();
    let ns = files("json-test-suite/test_parsing", "n_");
    assert_eq!(ns.len(), 188);
    for p in &ns {
        let (status, body) = post(&c, &f, "/json", p).await;
        parse_error(&name(p), status, &body, "jsonpath");
        // The XML route parses the same way and refuses the same files.
        let (status, body) = post(&c, &f, "/xml", p).await;
        parse_error(&name(p), status, &body, "json_to_xml");
    }
    // 100,000 opening brackets hit the nesting limit, not the stack.
    let (status, body) = post(
        &c,
        &f,
        "/json",
        &corpus("json-test-suite/test_parsing/n_structure_100000_opening_arrays.json"),
    )
    .await;
    let err = parse_error(
        "n_structure_100000_opening_arrays",
        status,
        &body,
        "jsonpath",
    );
    assert!(err.contains("recursion limit exceeded"), "{err}");
    f.engine.shutdown().await;
}

#[tokio::test]
async fn i_json_files_go_the_pinned_way_and_none_hangs() {
    let f = Ferry::start(&[("json.yaml", JSON_ROUTE)]).await;
    let c = client();
    let is = files("json-test-suite/test_parsing", "i_");
    assert_eq!(is.len(), 35);
    let mut accepted = Vec::new();
    let mut refused = 0;
    for p in &is {
        let file = name(p);
        let (status, body) = post(&c, &f, "/json", p).await;
        if status == 200 {
            accepted.push((file, String::from_utf8(body).unwrap()));
        } else {
            parse_error(&file, status, &body, "jsonpath");
            refused += 1;
        }
    }
    let want: Vec<(String, String)> = I_ACCEPTED
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(
        accepted, want,
        "i_ files accepted (with the value sent back)"
    );
    assert_eq!(refused, 30);
    // A UTF-8 BOM is not skipped: the body must start with the JSON text.
    let (status, body) = post(
        &c,
        &f,
        "/json",
        &corpus("json-test-suite/test_parsing/i_structure_UTF-8_BOM_empty_object.json"),
    )
    .await;
    let err = parse_error("BOM", status, &body, "jsonpath");
    assert!(err.ends_with("expected value at line 1 column 1"), "{err}");
    // 500 nested arrays are over the nesting limit of 128.
    let (status, body) = post(
        &c,
        &f,
        "/json",
        &corpus("json-test-suite/test_parsing/i_structure_500_nested_arrays.json"),
    )
    .await;
    let err = parse_error("500 nested", status, &body, "jsonpath");
    assert!(
        err.contains("recursion limit exceeded at line 1 column 128"),
        "{err}"
    );
    f.engine.shutdown().await;
}

#[tokio::test]
async fn y_json_files_become_xml_except_the_eight_that_xml_cannot_hold() {
    let f = Ferry::start(&[("xml.yaml", XML_ROUTE)]).await;
    let c = client();
    let mut converted = 0;
    let mut refused = Vec::new();
    for p in files("json-test-suite/test_parsing", "y_") {
        let (status, body) = post(&c, &f, "/xml", &p).await;
        let text = String::from_utf8(body).unwrap();
        match status {
            200 => {
                assert!(
                    text.starts_with("<doc") && text.ends_with("</doc>") || text == "<doc/>",
                    "{}: {text}",
                    name(&p)
                );
                converted += 1;
            }
            400 => {
                let v: Value = serde_json::from_str(&text).unwrap();
                refused.push((name(&p), v["error"].as_str().unwrap().to_string()));
            }
            other => panic!("{}: {other} {text}", name(&p)),
        }
    }
    assert_eq!(converted, 87);
    assert_eq!(refused.len(), Y_NOT_XML.len(), "{refused:#?}");
    for ((file, err), (want_file, want)) in refused.iter().zip(Y_NOT_XML) {
        assert_eq!(file, want_file);
        assert!(
            err.starts_with("json_to_xml: ") && err.contains(want),
            "{file}: {err}"
        );
    }
    f.engine.shutdown().await;
}

/// `(file, JSON reply or error, XML reply or error)`: 200 unless `ERR:`.
const TRANSFORM: &[(&str, &str, &str)] = &[
    (
        "number_-9223372036854775808.json",
        "[-9223372036854775808]",
        "<doc><item>-9223372036854775808</item></doc>",
    ),
    // One below i64::MIN no longer fits an integer: it becomes a float.
    (
        "number_-9223372036854775809.json",
        "[-9.223372036854776e+18]",
        "<doc><item>-9.223372036854776e+18</item></doc>",
    ),
    ("number_1.0.json", "[1.0]", "<doc><item>1.0</item></doc>"),
    // More digits than an f64 holds are rounded.
    (
        "number_1.000000000000000005.json",
        "[1.0]",
        "<doc><item>1.0</item></doc>",
    ),
    (
        "number_1000000000000000.json",
        "[1000000000000000]",
        "<doc><item>1000000000000000</item></doc>",
    ),
    // Fits a u64, so stays exact.
    (
        "number_10000000000000000999.json",
        "[10000000000000000999]",
        "<doc><item>10000000000000000999</item></doc>",
    ),
    // Underflow rounds to zero (while 1E400, an overflow, is refused).
    ("number_1e-999.json", "[0.0]", "<doc><item>0.0</item></doc>"),
    (
        "number_1e6.json",
        "[1000000.0]",
        "<doc><item>1000000.0</item></doc>",
    ),
    (
        "number_9223372036854775807.json",
        "[9223372036854775807]",
        "<doc><item>9223372036854775807</item></doc>",
    ),
    (
        "number_9223372036854775808.json",
        "[9223372036854775808]",
        "<doc><item>9223372036854775808</item></doc>",
    ),
    // Keys are compared as code points: NFC and NFD é are two keys.
    (
        "object_key_nfc_nfd.json",
        "{\"\u{e9}\":\"NFC\",\"e\u{301}\":\"NFD\"}",
        "<doc><\u{e9}>NFC</\u{e9}><e\u{301}>NFD</e\u{301}></doc>",
    ),
    (
        "object_key_nfd_nfc.json",
        "{\"e\u{301}\":\"NFD\",\"\u{e9}\":\"NFC\"}",
        "<doc><e\u{301}>NFD</e\u{301}><\u{e9}>NFC</\u{e9}></doc>",
    ),
    // Duplicate keys: the last value wins, in the first key's place.
    (
        "object_same_key_different_values.json",
        "{\"a\":2}",
        "<doc><a>2</a></doc>",
    ),
    (
        "object_same_key_same_value.json",
        "{\"a\":1}",
        "<doc><a>1</a></doc>",
    ),
    (
        "object_same_key_unclear_values.json",
        "{\"a\":-0.0}",
        "<doc><a>-0.0</a></doc>",
    ),
    (
        "string_1_escaped_invalid_codepoint.json",
        "ERR:unexpected end of hex escape at line 1 column 9",
        "ERR:unexpected end of hex escape at line 1 column 9",
    ),
    (
        "string_1_invalid_codepoint.json",
        "ERR:invalid unicode code point at line 1 column 3",
        "ERR:invalid unicode code point at line 1 column 3",
    ),
    (
        "string_2_escaped_invalid_codepoints.json",
        "ERR:lone leading surrogate in hex escape at line 1 column 14",
        "ERR:lone leading surrogate in hex escape at line 1 column 14",
    ),
    (
        "string_2_invalid_codepoints.json",
        "ERR:invalid unicode code point at line 1 column 3",
        "ERR:invalid unicode code point at line 1 column 3",
    ),
    (
        "string_3_escaped_invalid_codepoints.json",
        "ERR:lone leading surrogate in hex escape at line 1 column 14",
        "ERR:lone leading surrogate in hex escape at line 1 column 14",
    ),
    (
        "string_3_invalid_codepoints.json",
        "ERR:invalid unicode code point at line 1 column 3",
        "ERR:invalid unicode code point at line 1 column 3",
    ),
    // JSON can hold U+0000, XML 1.0 cannot.
    (
        "string_with_escaped_NULL.json",
        "[\"A\\u0000B\"]",
        "ERR:json_to_xml: cannot convert the JSON value at $[0] to XML: character U+0000 cannot appear in XML 1.0",
    ),
];

#[tokio::test]
async fn transform_cases_give_the_documented_json_and_xml() {
    let f = Ferry::start(&[("json.yaml", JSON_ROUTE), ("xml.yaml", XML_ROUTE)]).await;
    let c = client();
    let all = files("json-test-suite/test_transform", "");
    let names: Vec<String> = all.iter().map(|p| name(p)).collect();
    let want: Vec<&str> = TRANSFORM.iter().map(|t| t.0).collect();
    assert_eq!(names, want, "the test_transform files");
    for (p, (file, json, xml)) in all.iter().zip(TRANSFORM) {
        for (route, expected) in [("/json", json), ("/xml", xml)] {
            let (status, body) = post(&c, &f, route, p).await;
            let text = String::from_utf8(body).unwrap();
            match expected.strip_prefix("ERR:") {
                None => assert_eq!((status, text.as_str()), (200, *expected), "{file} {route}"),
                Some(err) => {
                    assert_eq!(status, 400, "{file} {route}: {text}");
                    let v: Value = serde_json::from_str(&text).unwrap();
                    let got = v["error"].as_str().unwrap();
                    assert!(got.ends_with(err), "{file} {route}: {got}");
                }
            }
        }
    }
    f.engine.shutdown().await;
}
