//! End-to-end: every csv-parser fixture (`csv/csv-parser/` in the corpus)
//! through real `csv` routes, each with an exact expected result or error.
//!
//! Why: these files are the odd cases real feeds send (ragged rows, a comment
//! line, Latin-1, UTF-16 in both byte orders, Mac CR-only line ends, a stray
//! quote in a 700 KB file, another newline character, backslash escapes).
//! Each one gets the outcome docs/corpus.md documents: the rows (values
//! read off the file by hand, not from Ferry) or the error naming the line.
//! A file added to the folder without an expectation fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a panic is the report; helpers are shared by `mod common`

mod common;

use common::{Ferry, corpus};
use serde_json::{Value, json};

/// Route path → steps.
const ROUTES: &[(&str, &str)] = &[
    ("csv", "  - csv: {}\n"),
    ("flex", "  - csv: { flexible: true }\n"),
    ("nohead", "  - csv: { header: false }\n"),
    ("tick", "  - csv: { delimiter: \"`\" }\n"),
    ("squote", "  - csv: { quote: \"'\" }\n"),
    ("latin1", "  - charset: { from: latin1 }\n  - csv: {}\n"),
    ("utf16le", "  - charset: { from: utf-16le }\n  - csv: {}\n"),
    ("utf16be", "  - charset: { from: utf-16be }\n  - csv: {}\n"),
];

enum Want {
    Rows(Value),
    /// The `error` of a 400 reply, exactly.
    Error(&'static str),
}

fn ragged(line: u32, got: u32, want: u32) -> String {
    format!(
        "csv: line {line}: {got} fields, expected {want} (set `flexible: true` to accept ragged rows)"
    )
}

fn not_utf8(line: u32, field: u32) -> String {
    format!(
        "csv: line {line}: field {field} is not valid UTF-8; decode the body with a `charset` step first"
    )
}

/// `(file, route, expected)`; every fixture appears at least once.
fn expectations() -> Vec<(&'static str, &'static str, Want)> {
    use Want::*;
    let abc = json!([{"a": "1", "b": "2", "c": "3"}, {"a": "4", "b": "5", "c": "ʤ"}]);
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    vec![
        // Without `delimiter: "`"` the whole line is one column.
        (
            "backtick.csv",
            "csv",
            Rows(json!([
            {"pokemon_id`p_desc": "1`Bulbasaur can be seen napping"},
            {"pokemon_id`p_desc": "2`There is a bud on this"}])),
        ),
        (
            "backtick.csv",
            "tick",
            Rows(json!([
            {"pokemon_id": "1", "p_desc": "Bulbasaur can be seen napping"},
            {"pokemon_id": "2", "p_desc": "There is a bud on this"}])),
        ),
        (
            "bad-data.csv",
            "csv",
            Rows(json!([
            {"": "", "somejunk": "nope", "<! />": ""},
            {"": "yes", "somejunk": "yup", "<! />": "yeah"},
            {"": "ok", "somejunk": "ok", "<! />": "ok!"}])),
        ),
        (
            "basic.csv",
            "csv",
            Rows(json!([{"a": "1", "b": "2", "c": "3"}])),
        ),
        ("bench/latin.csv", "csv", Error(leak(not_utf8(3, 3)))),
        (
            "bench/latin.csv",
            "latin1",
            Rows(json!([
            {"a": "1", "b": "2", "c": "3"}, {"a": "4", "b": "5", "c": "©"}])),
        ),
        // CR alone ends a record too; a CR inside quotes stays in the value.
        (
            "bench/mac-newlines.csv",
            "csv",
            Rows(json!([
            {"a": "1", "b": "2", "c": "3"}, {"a": "Once upon\ra time", "b": "5", "c": "6"}])),
        ),
        ("bench/utf16-big.csv", "csv", Error(leak(not_utf8(1, 1)))),
        ("bench/utf16-big.csv", "utf16be", Rows(abc.clone())),
        // The wrong byte order is not detected: no comma or line break is
        // left, so the file is one header row and there are no rows.
        ("bench/utf16-big.csv", "utf16le", Rows(json!([]))),
        ("bench/utf16.csv", "csv", Error(leak(not_utf8(1, 1)))),
        ("bench/utf16.csv", "utf16le", Rows(abc.clone())),
        ("bench/utf16.csv", "utf16be", Rows(json!([]))),
        ("bench/utf8.csv", "csv", Rows(abc)),
        // UTF-8 read as Latin-1 is not detected either: mojibake.
        (
            "bench/utf8.csv",
            "latin1",
            Rows(json!([
            {"a": "1", "b": "2", "c": "3"}, {"a": "4", "b": "5", "c": "Ê¤"}])),
        ),
        (
            "comma-in-quote.csv",
            "csv",
            Rows(json!([
            {"first": "John", "last": "Doe", "address": "120 any st.", "city": "Anytown, WW", "zip": "08123"}])),
        ),
        // No comment syntax: `# comment` is a one-column header row.
        ("comment.csv", "csv", Error(leak(ragged(2, 3, 1)))),
        (
            "comment.csv",
            "flex",
            Rows(json!([
            {"# comment": "a", "2": "b", "3": "c"}, {"# comment": "1", "2": "2", "3": "3"}])),
        ),
        // A header naming two columns alike is refused (one would be lost).
        (
            "empty-columns.csv",
            "csv",
            Error(
                "csv: line 1: columns 2 and 3 are both named ``; name them with `columns:` or set `header: false`",
            ),
        ),
        (
            "empty-columns.csv",
            "nohead",
            Rows(json!([["2007-01-01", "", ""], ["2007-01-02", "", ""]])),
        ),
        (
            "escape-quotes.csv",
            "csv",
            Rows(json!([
            {"a": "1", "b": "ha \"ha\" ha"}, {"a": "2", "b": "\"\""}, {"a": "3", "b": "4"}])),
        ),
        (
            "geojson.csv",
            "csv",
            Rows(json!([
            {"id": "", "prop0": "value0", "prop1": "", "geojson": "{\"type\": \"Point\", \"coordinates\": [102.0, 0.5]}"},
            {"id": "", "prop0": "value0", "prop1": "0.0", "geojson": "{\"type\": \"LineString\", \"coordinates\": [[102.0, 0.0], [103.0, 1.0], [104.0, 0.0], [105.0, 1.0]]}"},
            {"id": "", "prop0": "value0", "prop1": "{u'this': u'that'}", "geojson": "{\"type\": \"Polygon\", \"coordinates\": [[[100.0, 0.0], [101.0, 0.0], [101.0, 1.0], [100.0, 1.0], [100.0, 0.0]]]}"}])),
        ),
        (
            "headers.csv",
            "csv",
            Rows(json!([
            {"1": "4", "2": "5", "3": "6"}, {"1": "7", "2": "8", "3": "9"}])),
        ),
        (
            "headers.csv",
            "nohead",
            Rows(json!([["1", "2", "3"], ["4", "5", "6"], ["7", "8", "9"]])),
        ),
        (
            "newlines.csv",
            "csv",
            Rows(json!([
            {"a": "1", "b": "2", "c": "3"}, {"a": "Once upon \na time", "b": "5", "c": "6"},
            {"a": "7", "b": "8", "c": "9"}])),
        ),
        ("no-headers.csv", "csv", Error(leak(ragged(4, 4, 3)))),
        (
            "no-headers.csv",
            "flex",
            Rows(json!([
            {"a": "1", "b": "2", "c": "3"}, {"a": "4", "b": "5", "c": "6"},
            {"a": "7", "b": "8", "c": "9", "4": "10"}])),
        ),
        ("option-comment.csv", "csv", Error(leak(ragged(2, 3, 1)))),
        // Backslash escapes are not understood: read as RFC 4180 reads them.
        (
            "option-escape.csv",
            "csv",
            Rows(json!([
            {"a": "1", "b": "some \\escaped\\\" value\"", "c": "2"},
            {"a": "3", "b": "\\\\\"\"", "c": "4"}, {"a": "5", "b": "6", "c": "7"}])),
        ),
        // A stray quote at the start of line 4578 swallows the line break.
        (
            "option-maxRowBytes.csv",
            "csv",
            Error(leak(ragged(4578, 3, 15))),
        ),
        // `X` as the line break is not supported: one header row, no rows.
        ("option-newline.csv", "csv", Rows(json!([]))),
        (
            "option-newline.csv",
            "nohead",
            Rows(json!([[
                "a",
                "b",
                "cX1",
                "2",
                "3X\"X-Men\"",
                "5",
                "6X7",
                "8",
                "9"
            ]])),
        ),
        (
            "option-quote-escape.csv",
            "squote",
            Rows(json!([
            {"a": "1", "b": "some \\escaped\\' value'", "c": "2"},
            {"a": "3", "b": "\\\\''", "c": "4"}, {"a": "5", "b": "6", "c": "7"}])),
        ),
        (
            "option-quote-many.csv",
            "squote",
            Rows(json!([
            {"a": "1", "b": "some 'escaped' value", "c": "2"},
            {"a": "3", "b": "''", "c": "4"}, {"a": "5", "b": "6", "c": "7"}])),
        ),
        // With the default quote, single quotes are data.
        (
            "option-quote.csv",
            "csv",
            Rows(json!([
            {"a": "1", "b": "'some value'", "c": "2"}, {"a": "3", "b": "4", "c": "5"}])),
        ),
        (
            "option-quote.csv",
            "squote",
            Rows(json!([
            {"a": "1", "b": "some value", "c": "2"}, {"a": "3", "b": "4", "c": "5"}])),
        ),
        (
            "quotes+newlines.csv",
            "csv",
            Rows(json!([
            {"a": "1", "b": "ha \n\"ha\" \nha"}, {"a": "2", "b": " \n\"\" \n"}, {"a": "3", "b": "4"}])),
        ),
        (
            "strict+skipLines.csv",
            "csv",
            Rows(json!([
            {"a": "h1", "b": "h2", "c": "h3"}, {"a": "1", "b": "2", "c": "3"},
            {"a": "4", "b": "5", "c": "6"}, {"a": "7", "b": "8", "c": "9"}])),
        ),
        (
            "strict-false-less-columns.csv",
            "csv",
            Error(leak(ragged(3, 2, 3))),
        ),
        // Missing fields are left out, not set to "".
        (
            "strict-false-less-columns.csv",
            "flex",
            Rows(json!([
            {"a": "1", "b": "2", "c": "3"}, {"a": "4", "b": "5"}, {"a": "6", "b": "7", "c": "8"}])),
        ),
        (
            "strict-false-more-columns.csv",
            "csv",
            Error(leak(ragged(3, 4, 3))),
        ),
        (
            "strict-false-more-columns.csv",
            "flex",
            Rows(json!([
            {"a": "1", "b": "2", "c": "3"}, {"a": "4", "b": "5", "c": "6", "4": "7"},
            {"a": "8", "b": "9", "c": "10"}])),
        ),
        ("strict.csv", "csv", Error(leak(ragged(4, 4, 3)))),
    ]
}

async fn start() -> (Ferry, reqwest::Client) {
    let routes: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(p, steps)| {
            (
                format!("{p}.yaml"),
                format!("from:\n  http: {{ path: /{p} }}\nsteps:\n{steps}"),
            )
        })
        .collect();
    (Ferry::start(&routes).await, common::http_client())
}

async fn post(c: &reqwest::Client, f: &Ferry, route: &str, file: &str) -> (u16, Value) {
    let body = std::fs::read(corpus("csv/csv-parser/test/fixtures").join(file)).unwrap();
    let r = c
        .post(f.url(&format!("/{route}")))
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{file} via /{route}: no answer: {e}"));
    let status = r.status().as_u16();
    let bytes = r.bytes().await.unwrap();
    let v = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{file} via /{route}: not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, v)
}

#[tokio::test]
async fn every_csv_parser_fixture_gets_its_documented_rows_or_error() {
    let (f, c) = start().await;
    let dir = corpus("csv/csv-parser/test/fixtures");
    let mut on_disk: Vec<String> = ["", "bench/"]
        .iter()
        .flat_map(|sub| {
            std::fs::read_dir(dir.join(sub))
                .unwrap()
                .flatten()
                .filter(|e| e.path().is_file())
                .map(move |e| format!("{sub}{}", e.file_name().to_string_lossy()))
        })
        .collect();
    on_disk.sort();
    assert_eq!(on_disk.len(), 29);
    let table = expectations();
    let mut covered: Vec<String> = table.iter().map(|t| t.0.to_string()).collect();
    covered.push("large-dataset.csv".into()); // checked in its own test
    covered.sort();
    covered.dedup();
    assert_eq!(covered, on_disk, "every fixture has an expectation");
    for (file, route, want) in table {
        let (status, got) = post(&c, &f, route, file).await;
        match want {
            Want::Rows(rows) => assert_eq!((status, got), (200, rows), "{file} via /{route}"),
            Want::Error(err) => {
                assert_eq!(status, 400, "{file} via /{route}: {got}");
                assert_eq!(got["error"], err, "{file} via /{route}");
            }
        }
    }
    f.engine.shutdown().await;
}

#[tokio::test]
async fn the_large_files_parse_in_full_or_stop_at_the_stray_quote() {
    let (f, c) = start().await;
    // 7,268 earthquakes of 15 columns (counted with Python's csv module).
    let (status, got) = post(&c, &f, "csv", "large-dataset.csv").await;
    assert_eq!(status, 200);
    let rows = got.as_array().unwrap();
    assert_eq!(rows.len(), 7268);
    assert!(rows.iter().all(|r| r.as_object().unwrap().len() == 15));
    assert_eq!(rows[0]["time"], "2015-12-22T18:45:11.000Z");
    assert_eq!(rows[0]["place"], "54km S of Redoubt Volcano, Alaska");
    assert_eq!(rows[7267]["id"], "ak12036678");
    assert_eq!(rows[7267]["place"], "69km W of Talkeetna, Alaska");
    // The same data with a stray quote: with `flexible`, the quoted span
    // becomes one long field and 4,593 rows come out (Python agrees).
    let (status, got) = post(&c, &f, "flex", "option-maxRowBytes.csv").await;
    assert_eq!(status, 200);
    let rows = got.as_array().unwrap();
    assert_eq!(rows.len(), 4593);
    let odd = &rows[4576];
    assert_eq!(odd.as_object().unwrap().len(), 3, "{odd}");
    assert!(
        odd["time"]
            .as_str()
            .unwrap()
            .starts_with("2015-12-02T21:07:16.730Z,46.5141667,"),
        "{odd}"
    );
    f.engine.shutdown().await;
}
