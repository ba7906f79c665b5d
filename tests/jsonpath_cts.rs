//! JSONPath compliance: the RFC 9535 compliance test suite (`jsonpath-cts/cts.json`) and the
//! pre-RFC consensus of json-path-comparison (`jsonpath-comparison/regression_suite.yaml`),
//! both from `../shared/corpus/`, scored separately.
//!
//! The known failures of each suite (the tables of `docs/jsonpath.md`) are pinned by name: the
//! test fails if any other case fails, if a known failure starts passing (update the list and
//! the doc), or if any case panics. Run with `--nocapture` to see the reasons.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a panic is the report; helpers are shared by `mod common`

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use ferry::jsonpath::JsonPath;
use serde_json::Value;

/// Cases in cts.json, and the ones jsonpath-rust fails (694 of 703 pass).
const CTS_CASES: usize = 703;
const CTS_KNOWN_FAILURES: [&str; 9] = [
    "basic, descendant segment, multiple selectors",
    "basic, descendant segment, object traversal, multiple selectors",
    "filter, nested",
    "functions, count, result must be compared",
    "functions, length, non-singular query arg",
    "functions, length, non-singular query arg, multiple index selectors",
    "functions, length, non-singular query arg, multiple name selectors",
    "functions, length, result must be compared",
    "functions, value, result must be compared",
];
/// Queries of regression_suite.yaml, those with a consensus, and the scored ones that fail
/// (167 of 171 pass).
const REGRESSION_QUERIES: usize = 258;
const REGRESSION_SCORED: usize = 171;
const REGRESSION_KNOWN_FAILURES: [&str; 4] = [
    "dot_notation_with_dash",
    "dot_notation_with_number_on_object",
    "union_with_keys_after_array_slice",
    "union_with_keys_after_dot_notation_with_wildcard",
];

/// The case names of `name: reason` failure lines, sorted.
fn failed_names(failures: &[String]) -> Vec<&str> {
    let mut names: Vec<&str> = failures
        .iter()
        .map(|f| f.split_once(": ").map_or(f.as_str(), |(name, _)| name))
        .collect();
    names.sort();
    names
}

fn corpus_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/corpus")
        .join(relative)
}

fn read_corpus(relative: &str) -> String {
    let path = corpus_file(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the JSONPath corpus file {} is missing or unreadable ({e}); \
             the tests expect shared/ beside the crate (../shared/corpus)",
            path.display()
        )
    })
}

/// JSON equality as the suites mean it: 1 equals 1.0 and object key order does not matter.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(x), Some(y)) => x == y,
                _ => x.as_f64() == y.as_f64(),
            },
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn list_eq(actual: &[Value], expected: &[Value]) -> bool {
    actual.len() == expected.len() && actual.iter().zip(expected).all(|(a, e)| json_eq(a, e))
}

/// Same elements, any order (each expected element consumes one equal actual element).
fn multiset_eq(actual: &[Value], expected: &[Value]) -> bool {
    if actual.len() != expected.len() {
        return false;
    }
    let mut unused: Vec<&Value> = actual.iter().collect();
    expected
        .iter()
        .all(|e| match unused.iter().position(|a| json_eq(a, e)) {
            Some(i) => {
                unused.swap_remove(i);
                true
            }
            None => false,
        })
}

/// The outcome of one case: `Ok(())` or why it failed.
type Verdict = Result<(), String>;

fn compact(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(120) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn query(selector: &str, document: &Value) -> Result<Vec<Value>, String> {
    let path =
        JsonPath::compile(selector).map_err(|e| format!("rejected a valid selector: {e}"))?;
    Ok(path.query(document).into_iter().cloned().collect())
}

fn cts_case(case: &Value) -> Verdict {
    let selector = case
        .get("selector")
        .and_then(Value::as_str)
        .ok_or("case without a selector")?;
    if case.get("invalid_selector").and_then(Value::as_bool) == Some(true) {
        return match JsonPath::compile(selector) {
            Ok(_) => Err("accepted a selector the RFC rejects".to_string()),
            Err(_) => Ok(()),
        };
    }
    let document = case.get("document").ok_or("case without a document")?;
    let actual = query(selector, document)?;
    let as_list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let accepted: Vec<Vec<Value>> = match (case.get("result"), case.get("results")) {
        (Some(result), _) => vec![as_list(result)],
        (None, Some(Value::Array(results))) => results.iter().map(as_list).collect(),
        _ => return Err("case without result(s)".to_string()),
    };
    if accepted.iter().any(|expected| list_eq(&actual, expected)) {
        Ok(())
    } else {
        Err(format!(
            "got {} expected {}",
            compact(&Value::Array(actual)),
            accepted
                .iter()
                .map(|e| compact(&Value::Array(e.clone())))
                .collect::<Vec<_>>()
                .join(" or ")
        ))
    }
}

/// A regression-suite query that has a consensus. `NOT_SUPPORTED` means most implementations
/// reject it; `scalar-consensus` and `not-found-consensus` are other accepted shapes of the
/// answer, which for a node-list API mean "exactly that one node" and "no node".
fn regression_case(query_case: &Value, consensus: &Value) -> Verdict {
    let selector = query_case
        .get("selector")
        .and_then(Value::as_str)
        .ok_or("query without a selector")?;
    if consensus.as_str() == Some("NOT_SUPPORTED") {
        return match JsonPath::compile(selector) {
            Ok(_) => Err("accepted a query the consensus rejects".to_string()),
            Err(_) => Ok(()),
        };
    }
    let document = query_case
        .get("document")
        .ok_or("query without a document")?;
    let actual = query(selector, document)?;
    let expected = consensus.as_array().cloned().unwrap_or_default();
    let ordered = query_case.get("ordered").and_then(Value::as_bool) != Some(false);
    let consensus_ok = if ordered {
        list_eq(&actual, &expected)
    } else {
        multiset_eq(&actual, &expected)
    };
    let scalar_ok = query_case
        .get("scalar-consensus")
        .is_some_and(|scalar| list_eq(&actual, std::slice::from_ref(scalar)));
    let not_found_ok = query_case.get("not-found-consensus").is_some() && actual.is_empty();
    if consensus_ok || scalar_ok || not_found_ok {
        Ok(())
    } else {
        Err(format!(
            "got {} consensus {}{}",
            compact(&Value::Array(actual)),
            compact(consensus),
            if ordered { "" } else { " (any order)" }
        ))
    }
}

/// Runs every case under `catch_unwind` and reports; returns (passed, failures, panics).
fn score<'a>(
    cases: impl Iterator<Item = (&'a str, Box<dyn FnOnce() -> Verdict + 'a>)>,
) -> (usize, Vec<String>, usize) {
    let (mut passed, mut failures, mut panics) = (0, Vec::new(), 0);
    for (name, case) in cases {
        match catch_unwind(AssertUnwindSafe(case)) {
            Ok(Ok(())) => passed += 1,
            Ok(Err(reason)) => failures.push(format!("{name}: {reason}")),
            Err(_) => {
                panics += 1;
                failures.push(format!("{name}: PANICKED"));
            }
        }
    }
    (passed, failures, panics)
}

#[test]
fn rfc9535_compliance_suite() {
    let suite: Value = serde_json::from_str(&read_corpus("jsonpath-cts/cts.json"))
        .expect("cts.json is valid JSON");
    let cases = suite
        .get("tests")
        .and_then(Value::as_array)
        .expect("cts.json has a tests array");
    let (passed, failures, panics) = score(cases.iter().map(|case| {
        let name = case
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("<unnamed>");
        (
            name,
            Box::new(move || cts_case(case)) as Box<dyn FnOnce() -> Verdict>,
        )
    }));
    println!("RFC 9535 CTS: {passed}/{} passed", cases.len());
    for failure in &failures {
        println!("  FAIL {failure}");
    }
    assert_eq!(panics, 0, "cases panicked: {failures:#?}");
    assert_eq!(cases.len(), CTS_CASES, "cts.json changed");
    assert_eq!(failed_names(&failures), CTS_KNOWN_FAILURES, "{failures:#?}");
    assert_eq!(passed, CTS_CASES - CTS_KNOWN_FAILURES.len());
}

#[test]
fn json_path_comparison_regression_suite() {
    let suite: Value =
        serde_saphyr::from_str(&read_corpus("jsonpath-comparison/regression_suite.yaml"))
            .expect("regression_suite.yaml parses");
    let queries = suite
        .get("queries")
        .and_then(Value::as_array)
        .expect("regression_suite.yaml has a queries list");
    let scored: Vec<(&Value, &Value)> = queries
        .iter()
        .filter_map(|q| q.get("consensus").map(|c| (q, c)))
        .collect();
    let (passed, failures, panics) = score(scored.iter().map(|&(q, consensus)| {
        let name = q.get("id").and_then(Value::as_str).unwrap_or("<unnamed>");
        (
            name,
            Box::new(move || regression_case(q, consensus)) as Box<dyn FnOnce() -> Verdict>,
        )
    }));
    // Queries without consensus have no agreed answer; they only have to run without panicking.
    let unscored_panics = queries
        .iter()
        .filter(|q| q.get("consensus").is_none())
        .filter(|q| {
            catch_unwind(|| {
                let selector = q.get("selector").and_then(Value::as_str).unwrap_or("");
                if let (Ok(path), Some(document)) = (JsonPath::compile(selector), q.get("document"))
                {
                    path.query(document);
                }
            })
            .is_err()
        })
        .count();
    println!(
        "json-path-comparison regression suite: {passed}/{} scored queries passed ({} without consensus, not scored)",
        scored.len(),
        queries.len() - scored.len()
    );
    for failure in &failures {
        println!("  FAIL {failure}");
    }
    assert_eq!(
        panics + unscored_panics,
        0,
        "queries panicked: {failures:#?}"
    );
    assert_eq!(
        queries.len(),
        REGRESSION_QUERIES,
        "regression_suite.yaml changed"
    );
    assert_eq!(
        scored.len(),
        REGRESSION_SCORED,
        "regression_suite.yaml changed"
    );
    assert_eq!(
        failed_names(&failures),
        REGRESSION_KNOWN_FAILURES,
        "{failures:#?}"
    );
    assert_eq!(passed, REGRESSION_SCORED - REGRESSION_KNOWN_FAILURES.len());
}
