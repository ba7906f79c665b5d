//! Keeps docs/ARCHITECTURE.md true: reads the `crate::` paths of every file
//! under `src/` (outside its `#[cfg(test)]` tail) and fails when a rule of
//! the house is broken.
//!
//! Rules: each part names only the parts its row of the table allows (so
//! the codec and config name nothing above them, and steps never name a
//! connector); the codec does no I/O; the engine names no concrete connector
//! or step kind. The violations that exist today are
//! pinned by file in `KNOWN` (issue 12 removes them): a new one fails, and so
//! does a pinned one that is gone, so the list only ever shrinks.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a panic is the report; helpers are shared by `mod common`

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// `(file, what it names)` breaking a rule today, waiting for issue 12.
const KNOWN: &[(&str, &str)] = &[
    // The route file (`RouteFile`) lives in config and names every kind enum.
    ("config/mod.rs", "crate::connectors"),
    ("config/mod.rs", "crate::queue_store"),
    ("config/mod.rs", "crate::script"),
    ("config/mod.rs", "crate::steps"),
    // Connector files are parsed straight into `ConnectorConfig`.
    ("config/load.rs", "crate::connectors"),
    // Steps get shared pools as `connectors::Resources`; `tcp_call` uses the
    // TCP connector's client until the request/reply seam exists.
    ("steps/mod.rs", "crate::connectors"),
    ("steps/tcp_call.rs", "crate::connectors"),
];

/// What each part may name besides itself and the crate root's functions
/// (the table in docs/ARCHITECTURE.md); `None`: anything.
fn allowed(part: &str) -> Option<&'static [&'static str]> {
    Some(match part {
        "message" | "codec" | "config" | "script" | "jsonpath" => &[],
        "queue_store" | "template" => &["message"],
        "connectors" => &[
            "codec",
            "config",
            "jsonpath",
            "message",
            "queue_store",
            "template",
        ],
        "steps" => &[
            "codec", "config", "jsonpath", "message", "script", "template",
        ],
        "engine" => &[
            "config",
            "connectors",
            "message",
            "queue_store",
            "script",
            "steps",
        ],
        _ => return None,
    })
}

/// Crate-root items anyone may name.
const ROOT: &[&str] = &["install_crypto_provider"];

/// Identifiers that mean file, socket or process I/O.
const IO: &[&str] = &[
    "std::fs",
    "tokio::fs",
    "std::net",
    "tokio::net",
    "std::process",
    "tokio::process",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The file's code before its unit tests, without `//` comments.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let body = text.split("#[cfg(test)]").next().unwrap_or("");
    body.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::a` and `crate::a::b` the code names.
fn crate_paths(code: &str) -> BTreeSet<(String, Option<String>)> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let first = ident(rest);
        let second = rest[first.len()..]
            .strip_prefix("::")
            .map(ident)
            .filter(|s| !s.is_empty());
        out.insert((first, second));
    }
    out
}

/// Kinds: the files and folders of a kind directory, but its `mod.rs`.
fn kinds(dir: &str) -> BTreeSet<String> {
    std::fs::read_dir(src().join(dir))
        .unwrap()
        .flatten()
        .map(|e| {
            let p = e.path();
            p.file_stem().unwrap().to_string_lossy().into_owned()
        })
        .filter(|k| k != "mod")
        .collect()
}

#[test]
fn the_import_rules_of_docs_architecture_hold() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    assert!(files.len() > 40, "read only {} files of src/", files.len());
    let (connector_kinds, step_kinds) = (kinds("connectors"), kinds("steps"));
    assert!(connector_kinds.contains("file") && step_kinds.contains("filter"));

    let mut broken = BTreeSet::new();
    let mut io = Vec::new();
    for f in &files {
        let rel = f
            .strip_prefix(src())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let part = rel.split('/').next().unwrap().trim_end_matches(".rs");
        let code = code(f);
        for (first, second) in crate_paths(&code) {
            if ROOT.contains(&first.as_str()) {
                continue;
            }
            let named = format!("crate::{first}");
            let rule_broken = match allowed(part) {
                // Top-level parts (admin, dead_letters, schema) may name anything.
                None => false,
                Some(may) => first != part && !may.contains(&first.as_str()),
            } || (part == "engine"
                && ((first == "connectors"
                    && second.as_ref().is_some_and(|s| connector_kinds.contains(s)))
                    || (first == "steps"
                        && second.as_ref().is_some_and(|s| step_kinds.contains(s)))));
            if rule_broken {
                let named = match (part, second) {
                    ("engine", Some(s)) => format!("{named}::{s}"),
                    _ => named,
                };
                broken.insert((rel.clone(), named));
            }
        }
        if part == "codec" {
            io.extend(
                IO.iter()
                    .filter(|w| code.contains(*w))
                    .map(|w| format!("{rel} uses {w}")),
            );
        }
    }
    assert!(io.is_empty(), "the codec does no I/O: {io:?}");
    let known: BTreeSet<(String, String)> = KNOWN
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let new: Vec<_> = broken.difference(&known).collect();
    let gone: Vec<_> = known.difference(&broken).collect();
    assert!(
        new.is_empty(),
        "import rules broken (see docs/ARCHITECTURE.md): {new:?}"
    );
    assert!(
        gone.is_empty(),
        "fixed, so remove from KNOWN in tests/architecture.rs: {gone:?}"
    );
}

#[test]
fn the_rule_reader_sees_paths_and_skips_comments_and_tests() {
    let code_text = "use crate::connectors::file::FileSink; // crate::steps\nfn f() { crate::message::Body::default(); }\n";
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.rs");
    std::fs::write(
        &p,
        format!("{code_text}#[cfg(test)]\nmod tests {{ use crate::engine; }}\n"),
    )
    .unwrap();
    let paths = crate_paths(&code(&p));
    let want: BTreeSet<(String, Option<String>)> = [
        ("connectors".to_string(), Some("file".to_string())),
        ("message".to_string(), Some("Body".to_string())),
    ]
    .into_iter()
    .collect();
    assert_eq!(paths, want);
}
