//! `ferry schema` is what editors check route files with (docs/editor-setup.md),
//! so it must be a valid JSON Schema, and every file Ferry ships — the default
//! `routes/` and each `examples/*/` folder — must conform to it. A schema that
//! rejects a working file makes editors mark good files red; one that accepts
//! anything checks nothing, so the same validator must also refuse broken files.
//! The schema is validated by an independent validator crate (`jsonschema`,
//! docs/adr/0006-json-schema-validator.md), not by the code that generates it.
//! The kinds it lists are also what the docs must cover: every step and every
//! source and sink kind has a section.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a panic is the report; helpers are shared by `mod common`

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

/// `ferry schema [target]`, parsed; the schema itself must be valid under the
/// draft it declares.
fn schema(target: &str) -> (serde_json::Value, jsonschema::Validator) {
    let out = common::output_within(
        Command::new(env!("CARGO_BIN_EXE_ferry")).args(["schema", target]),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "ferry schema {target} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ferry schema {target} is not JSON: {e}"));
    assert_eq!(schema["$schema"], DRAFT_2020_12, "{target} schema draft");
    let meta_errors: Vec<String> = jsonschema::meta::validator_for(&schema)
        .unwrap_or_else(|e| panic!("no meta-schema for the {target} schema: {e}"))
        .iter_errors(&schema)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        meta_errors.is_empty(),
        "the {target} schema is not a valid JSON Schema:\n{}",
        meta_errors.join("\n")
    );
    let validator = jsonschema::validator_for(&schema)
        .unwrap_or_else(|e| panic!("cannot compile the {target} schema: {e}"));
    (schema, validator)
}

/// The file as Ferry reads it: `${VAR:-default}` takes its default (the
/// shipped files give one for every variable), then YAML to JSON.
fn load(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .unwrap_or_else(|| panic!("{}: unclosed ${{", path.display()));
        let inner = &rest[start + 2..start + end];
        let (_, default) = inner.split_once(":-").unwrap_or_else(|| {
            panic!(
                "{}: ${{{inner}}} has no default; give this test a value",
                path.display()
            )
        });
        out.push_str(default);
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    serde_saphyr::from_str(&out).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Schema errors of one file, as "path: error at /pointer".
fn violations(validator: &jsonschema::Validator, path: &Path) -> Vec<String> {
    let doc = load(path);
    validator
        .iter_errors(&doc)
        .map(|e| format!("{}: {} at '{}'", path.display(), e, e.instance_path()))
        .collect()
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_shipped_route_and_connector_file_conforms_to_ferry_schema() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (_, routes) = schema("route");
    let (_, connectors) = schema("connector");
    let mut route_files = yaml_files(&root.join("routes"));
    let mut connector_files = Vec::new();
    let mut examples: Vec<PathBuf> = std::fs::read_dir(root.join("examples"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    examples.sort();
    assert!(!examples.is_empty(), "no example folders");
    for ex in &examples {
        // An example without routes would be skipped silently by a glob.
        let files = yaml_files(&ex.join("routes"));
        assert!(!files.is_empty(), "{} has no route files", ex.display());
        route_files.extend(files);
        if ex.join("connectors").is_dir() {
            connector_files.extend(yaml_files(&ex.join("connectors")));
        }
    }
    let mut errors: Vec<String> = route_files
        .iter()
        .flat_map(|f| violations(&routes, f))
        .collect();
    errors.extend(
        connector_files
            .iter()
            .flat_map(|f| violations(&connectors, f)),
    );
    assert!(
        errors.is_empty(),
        "{} schema violation(s):\n{}",
        errors.len(),
        errors.join("\n")
    );
    println!(
        "{} route files and {} connector files from routes/ and {} examples conform",
        route_files.len(),
        connector_files.len(),
        examples.len()
    );
}

#[test]
fn the_schema_refuses_what_ferry_check_refuses() {
    let (_, routes) = schema("route");
    let (_, connectors) = schema("connector");
    let dir = tempfile::tempdir().unwrap();
    let bad = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    // Each file is what a user gets wrong; the schema must mark it, or the
    // "valid" verdict above means nothing.
    let route_cases = [
        ("typo.yaml", "from:\n  http: { path: /a }\nstpes: []\n"),
        ("no-source.yaml", "to:\n  - stdout: {}\n"),
        (
            "unknown-step.yaml",
            "from:\n  http: { path: /a }\nsteps:\n  - xml_to_jsn: {}\n",
        ),
        (
            "wrong-type.yaml",
            "from:\n  http: { path: /a }\nconcurrency: many\n",
        ),
        (
            "unknown-sink-key.yaml",
            "from:\n  http: { path: /a }\nto:\n  - file: { path: /tmp, nmae: x }\n",
        ),
    ];
    for (name, text) in route_cases {
        let p = bad(name, text);
        assert!(
            !violations(&routes, &p).is_empty(),
            "the route schema accepts {name}:\n{text}"
        );
    }
    let p = bad("conn.yaml", "kind: ftp\nurl: ftp://x\n");
    assert!(
        !violations(&connectors, &p).is_empty(),
        "the connector schema accepts an unknown kind"
    );
    // The same validators accept a minimal good file (they are not "refuse all").
    let p = bad(
        "ok.yaml",
        "from:\n  http: { path: /a }\nto:\n  - stdout: {}\n",
    );
    assert_eq!(violations(&routes, &p), Vec::<String>::new());
}

/// The `required` key of each variant of `$defs.NAME` (its kinds).
fn kinds(schema: &serde_json::Value, name: &str) -> Vec<String> {
    let def = &schema["$defs"][name];
    let variants = def["oneOf"]
        .as_array()
        .or(def["anyOf"].as_array())
        .unwrap_or_else(|| panic!("$defs.{name} has no variants"));
    variants
        .iter()
        .map(|v| v["required"][0].as_str().unwrap().to_string())
        .collect()
}

/// Headings (`#` lines) of a docs page.
fn headings(page: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(page);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_step_source_and_sink_kind_has_a_section_in_the_docs() {
    let (schema, _) = schema("route");
    let step_pages = [headings("steps.md"), headings("legacy.md")].concat();
    let connector_pages = [headings("connectors.md"), headings("legacy.md")].concat();
    let has_page = |kind: &str| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("docs/connectors/{kind}.md"))
            .exists()
    };
    let mut missing = Vec::new();
    let steps = kinds(&schema, "StepConfig");
    assert!(steps.len() >= 14, "step kinds: {steps:?}");
    for k in &steps {
        if !step_pages.iter().any(|h| h.contains(&format!("`{k}`"))) {
            missing.push(format!(
                "step `{k}`: no heading in docs/steps.md or docs/legacy.md"
            ));
        }
    }
    for (def, side) in [("SourceConfig", "source"), ("SinkConfig", "sink")] {
        let list = kinds(&schema, def);
        assert!(list.len() >= 10, "{side} kinds: {list:?}");
        for k in &list {
            let named_with = connector_pages
                .iter()
                .any(|h| h.contains(&format!("`{k}`")) && h.contains(side));
            if !(named_with || has_page(k)) {
                missing.push(format!(
                    "{side} `{k}`: no heading in docs/connectors.md or docs/legacy.md, and no docs/connectors/{k}.md"
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "undocumented kinds:\n{}",
        missing.join("\n")
    );
}
