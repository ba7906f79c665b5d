//! The XML ⇄ JSON codec against the shared corpus (`../shared/corpus`, see its README): every
//! well-formed document converts, every malformed or hostile one is refused quickly and without
//! a panic, and XML → JSON → XML keeps elements, attributes, text and same-name sibling order.
//!
//! The counts are exact and the known exceptions are pinned by file name (the figures of
//! `docs/xml-json.md`): a change that converts fewer well-formed files, accepts another
//! malformed one, or fixes one exception while breaking another file fails here; update the
//! lists and the doc together. Run with `--nocapture` to see the counts and lists.
//!
//! Speed is measured by `cargo bench --bench codec`, not here. Peak memory is measured here, in
//! a child process of this test binary, so that other tests running in parallel do not count.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a panic is the report; helpers are shared by `mod common`

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use ferry::codec::xml::{JsonToXmlOptions, XmlError, XmlToJsonOptions, json_to_xml, xml_to_json};
use quick_xml::Reader;
use quick_xml::events::Event;
use serde_json::Value;

/// Well-formed files, and how many of them convert.
const WELL_FORMED_FILES: usize = 533;
const WELL_FORMED_CONVERTED: usize = 450;
/// Well-formed files refused for their encoding.
const UNSUPPORTED_ENCODING: [&str; 1] = ["xml-libxml2/test/ebcdic_566012.xml"];
/// Well-formed files refused by the "no DTD entities" policy (measured).
const EXPECTED_DTD_POLICY_REFUSALS: usize = 78;
/// Malformed files, and the ones the codec accepts (why: docs/xml-json.md).
const NOT_WELL_FORMED_FILES: usize = 531;
const NOT_WELL_FORMED_ACCEPTED: [&str; 17] = [
    "xml-w3c-conf/xmlconf/oasis/p09fail1.xml",
    "xml-w3c-conf/xmlconf/oasis/p09fail2.xml",
    "xml-w3c-conf/xmlconf/oasis/p30fail1.xml",
    "xml-w3c-conf/xmlconf/oasis/p31fail1.xml",
    "xml-w3c-conf/xmlconf/oasis/p61fail1.xml",
    "xml-w3c-conf/xmlconf/oasis/p62fail1.xml",
    "xml-w3c-conf/xmlconf/oasis/p62fail2.xml",
    "xml-w3c-conf/xmlconf/oasis/p63fail1.xml",
    "xml-w3c-conf/xmlconf/oasis/p63fail2.xml",
    "xml-w3c-conf/xmlconf/oasis/p64fail1.xml",
    "xml-w3c-conf/xmlconf/oasis/p64fail2.xml",
    "xml-w3c-conf/xmlconf/eduni/namespaces/1.0/012.xml",
    "xml-libxml2/test/errors/attr3.xml",
    "xml-libxml2/test/errors/quadratic-defattr.xml",
    "xml-libxml2/test/namespaces/err_0.xml",
    "xml-libxml2/test/recurse/lol_ip_content.xml",
    "xml-libxml2/test/recurse/lol_ip_value.xml",
];
/// The `quick-xml-encodings/` files that convert: the same small document in UTF-8 and
/// UTF-16, with and without a BOM. The other 36 are refused as malformed after decoding.
const ENCODINGS_CONVERTED: [&str; 6] = [
    "quick-xml-encodings/utf16be-bom.xml",
    "quick-xml-encodings/utf16be.xml",
    "quick-xml-encodings/utf16le-bom.xml",
    "quick-xml-encodings/utf16le.xml",
    "quick-xml-encodings/utf8-bom.xml",
    "quick-xml-encodings/utf8.xml",
];
const ENCODINGS_MALFORMED: usize = 36;
/// Well-formed XML 1.0 documents that are not namespace-well-formed (a name like `A:b` with an
/// undeclared prefix, or a prefix declared only through a DTD default attribute, which is not
/// applied): Ferry is namespace-aware and refuses them.
const NOT_NAMESPACE_WELL_FORMED: [&str; 4] = [
    "xmltest/valid-sa/012.xml",
    "xml-w3c-conf/xmlconf/oasis/p04pass1.xml",
    "xml-w3c-conf/xmlconf/oasis/p05pass1.xml",
    "xml-libxml2/test/valid/ns.xml",
];
/// Files of the round-trip set that must round-trip (measured).
const MIN_ROUND_TRIPS: usize = 102;

fn corpus() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    assert!(
        dir.join("README.md").is_file(),
        "the shared test corpus is required but missing at {} (expected ../shared/corpus next \
         to the crate)",
        dir.display()
    );
    dir
}

/// Regular files of `dir` (recursively if asked), without licences and notes, sorted.
fn files(dir: &Path, recursive: bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                if recursive {
                    dirs.push(path);
                }
            } else if !name.starts_with("LICENSE") && !name.ends_with(".md") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    files(dir, false)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect()
}

/// `(TYPE, URI)` of every `<TEST>` in a W3C conformance catalog.
fn catalog(path: &Path) -> Vec<(String, PathBuf)> {
    let text = std::fs::read_to_string(path).expect("catalog");
    let mut reader = Reader::from_str(&text);
    let mut tests = Vec::new();
    loop {
        match reader.read_event().expect("catalog parses") {
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == "TEST" => {
                let mut kind = String::new();
                let mut uri = String::new();
                for attr in e.attributes() {
                    let attr = attr.expect("catalog attribute");
                    match attr.key.as_ref() {
                        "TYPE" => kind = attr.value.into_owned(),
                        "URI" => uri = attr.value.into_owned(),
                        _ => {}
                    }
                }
                let dir = path.parent().expect("catalog dir");
                tests.push((kind, dir.join(uri)));
            }
            Event::Eof => break,
            _ => {}
        }
    }
    tests
}

fn catalog_of(path: &Path, kinds: &[&str]) -> Vec<PathBuf> {
    catalog(path)
        .into_iter()
        .filter(|(kind, _)| kinds.contains(&kind.as_str()))
        .map(|(_, p)| p)
        .collect()
}

const INVALID_ENCODING_FAULT: &str =
    "xml-soap/savon/spec/fixtures/response/soap_fault_invalid_encoding.xml";

fn well_formed_files(c: &Path) -> Vec<PathBuf> {
    let oasis = c.join("xml-w3c-conf/xmlconf/oasis/oasis.xml");
    let japanese = c.join("xml-w3c-conf/xmlconf/japanese/japanese.xml");
    let ns = c.join("xml-w3c-conf/xmlconf/eduni/namespaces/1.0/rmt-ns10.xml");
    let libxml2 = c.join("xml-libxml2/test");
    let mut all = Vec::new();
    all.extend(with_ext(&c.join("xmltest/valid-sa"), "xml"));
    all.extend(catalog_of(&oasis, &["valid", "invalid"]));
    // The Japanese tests are well-formed; TYPE="error" only means "refuse if the encoding is
    // not supported".
    all.extend(catalog_of(&japanese, &["valid", "invalid", "error"]));
    // Namespace-"invalid" documents are namespace-well-formed.
    all.extend(catalog_of(&ns, &["valid", "invalid"]));
    all.extend(files(&libxml2, false));
    all.extend(files(&libxml2.join("SVG"), false));
    all.extend(
        files(&libxml2.join("valid"), false)
            .into_iter()
            .filter(|p| p.extension().is_none_or(|e| e != "dtd" && e != "ent")),
    );
    all.extend(
        files(&c.join("xml-soap"), true)
            .into_iter()
            .filter(|p| !p.ends_with(INVALID_ENCODING_FAULT)),
    );
    for dir in ["xml-feeds", "xml-docs", "xml-real", "xml-large"] {
        all.extend(files(&c.join(dir), true));
    }
    let defused = c.join("xml-hostile-real/defusedxml/xmltestdata");
    // Benign controls, plus two well-formed documents whose DTDs must simply not be fetched.
    for name in ["simple.xml", "simple-ns.xml", "dtd.xml", "dtd_element.xml"] {
        all.push(defused.join(name));
    }
    let recurse = libxml2.join("recurse");
    all.push(recurse.join("good.xml"));
    all.push(recurse.join("good_attr.xml"));
    all
}

fn not_well_formed_files(c: &Path) -> Vec<PathBuf> {
    let oasis = c.join("xml-w3c-conf/xmlconf/oasis/oasis.xml");
    let ns = c.join("xml-w3c-conf/xmlconf/eduni/namespaces/1.0/rmt-ns10.xml");
    let libxml2 = c.join("xml-libxml2/test");
    let mut all = Vec::new();
    all.extend(with_ext(&c.join("xmltest/not-wf-sa"), "xml"));
    all.extend(catalog_of(&oasis, &["not-wf"]));
    all.extend(catalog_of(&ns, &["not-wf"]));
    all.extend(with_ext(&libxml2.join("errors"), "xml"));
    all.extend(with_ext(&libxml2.join("errors10"), "xml"));
    all.extend(with_ext(&libxml2.join("namespaces"), "xml"));
    all.extend(
        with_ext(&libxml2.join("recurse"), "xml")
            .into_iter()
            .filter(|p| !p.ends_with("good.xml") && !p.ends_with("good_attr.xml")),
    );
    let defused = c.join("xml-hostile-real/defusedxml/xmltestdata");
    for name in [
        "xmlbomb.xml",
        "xmlbomb2.xml",
        "quadratic.xml",
        "cyclic.xml",
        "external.xml",
        "external_file.xml",
    ] {
        all.push(defused.join(name));
    }
    all.push(c.join(INVALID_ENCODING_FAULT));
    all
}

enum Outcome {
    Converted(Value),
    Refused(XmlError),
    Panicked(String),
}

fn convert(path: &Path) -> Outcome {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let opts = XmlToJsonOptions::default();
    match catch_unwind(AssertUnwindSafe(|| xml_to_json(&bytes, &opts))) {
        Ok(Ok(v)) => Outcome::Converted(v),
        Ok(Err(e)) => Outcome::Refused(e),
        Err(payload) => Outcome::Panicked(
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default(),
        ),
    }
}

fn rel(c: &Path, p: &Path) -> String {
    p.strip_prefix(c).unwrap_or(p).display().to_string()
}

#[test]
fn well_formed_documents_convert() {
    let c = corpus();
    let list = well_formed_files(&c);
    let (mut converted, mut policy, mut encoding) = (0, Vec::new(), Vec::new());
    let (mut other, mut panics) = (Vec::new(), Vec::new());
    let (mut wrong_refusal, mut not_ns_well_formed) = (Vec::new(), Vec::new());
    for path in &list {
        let declares_entities = std::fs::read(path)
            .expect("readable")
            .windows(8)
            .any(|w| w == b"<!ENTITY");
        match convert(path) {
            Outcome::Converted(_) => converted += 1,
            Outcome::Refused(XmlError::DtdEntity { .. }) => policy.push(rel(&c, path)),
            Outcome::Refused(e) if declares_entities => {
                wrong_refusal.push(format!("{}: {e}", rel(&c, path)))
            }
            Outcome::Refused(e) if e.is_dtd_policy() => policy.push(rel(&c, path)),
            Outcome::Refused(XmlError::UnsupportedEncoding { .. }) => encoding.push(rel(&c, path)),
            Outcome::Refused(e) => {
                let name = rel(&c, path);
                if NOT_NAMESPACE_WELL_FORMED.contains(&name.as_str()) {
                    not_ns_well_formed.push(name);
                } else {
                    other.push(format!("{name}: {e}"));
                }
            }
            Outcome::Panicked(m) => panics.push(format!("{}: {m}", rel(&c, path))),
        }
    }
    println!(
        "well-formed: {} files, {converted} converted, {} refused by the DTD-entity policy, {} \
         unsupported encoding, {} not namespace-well-formed, {} other errors, {} panics",
        list.len(),
        policy.len(),
        encoding.len(),
        not_ns_well_formed.len(),
        other.len(),
        panics.len()
    );
    println!("refused by policy:\n  {}", policy.join("\n  "));
    println!("unsupported encoding:\n  {}", encoding.join("\n  "));
    println!("other errors:\n  {}", other.join("\n  "));
    assert!(panics.is_empty(), "panics:\n{}", panics.join("\n"));
    assert!(other.is_empty(), "unexpected errors:\n{}", other.join("\n"));
    assert!(
        wrong_refusal.is_empty(),
        "documents that declare entities must get the DTD-entity error:\n{}",
        wrong_refusal.join("\n")
    );
    assert_eq!(list.len(), WELL_FORMED_FILES, "the corpus changed");
    assert_eq!(
        converted, WELL_FORMED_CONVERTED,
        "well-formed files converted"
    );
    assert_eq!(policy.len(), EXPECTED_DTD_POLICY_REFUSALS);
    assert_eq!(encoding, UNSUPPORTED_ENCODING);
    assert_eq!(not_ns_well_formed, NOT_NAMESPACE_WELL_FORMED);
}

#[test]
fn malformed_and_hostile_documents_are_refused() {
    let c = corpus();
    let list = not_well_formed_files(&c);
    let (mut refused, mut accepted, mut panics) = (0, Vec::new(), Vec::new());
    for path in &list {
        match convert(path) {
            Outcome::Converted(_) => accepted.push(rel(&c, path)),
            Outcome::Refused(_) => refused += 1,
            Outcome::Panicked(m) => panics.push(format!("{}: {m}", rel(&c, path))),
        }
    }
    println!(
        "not well-formed: {} files, {refused} refused, {} wrongly accepted, {} panics",
        list.len(),
        accepted.len(),
        panics.len()
    );
    println!("wrongly accepted:\n  {}", accepted.join("\n  "));
    assert!(panics.is_empty(), "panics:\n{}", panics.join("\n"));
    assert_eq!(list.len(), NOT_WELL_FORMED_FILES, "the corpus changed");
    assert_eq!(
        accepted, NOT_WELL_FORMED_ACCEPTED,
        "malformed files accepted"
    );
    assert_eq!(
        refused,
        NOT_WELL_FORMED_FILES - NOT_WELL_FORMED_ACCEPTED.len()
    );
}

/// The name of the attribute on line 7 of a `quick-xml-encodings/` file, decoded with
/// encoding_rs (the WHATWG reference decoder) by the file's declared label, without Ferry.
fn line_seven_attribute(xml: &[u8]) -> String {
    let head = String::from_utf8_lossy(&xml[..xml.len().min(100)]).into_owned();
    let label = head
        .split("encoding=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("an encoding declaration");
    let encoding = encoding_rs::Encoding::for_label(label.as_bytes()).expect("a WHATWG label");
    let (text, _, _) = encoding.decode(xml);
    let line = text.lines().nth(6).expect("a line 7");
    line.trim_start()
        .split('=')
        .next()
        .expect("an attribute")
        .to_string()
}

#[test]
fn declared_encodings_decode_or_are_refused_clearly() {
    let c = corpus();
    let list = files(&c.join("quick-xml-encodings"), true);
    let (mut converted, mut malformed) = (Vec::new(), Vec::new());
    let mut other = Vec::new();
    for path in &list {
        let name = rel(&c, path);
        match convert(path) {
            Outcome::Converted(v) => {
                // The same document in each of these encodings.
                assert_eq!(
                    v,
                    serde_json::json!({"project": {"@name": "project-name"}}),
                    "{name}"
                );
                converted.push(name);
            }
            // These generated files are XML 1.1 with an unquoted attribute value (expat
            // refuses them too). The error names the attribute as decoded, which shows that
            // decoding by the declared encoding worked.
            Outcome::Refused(e @ XmlError::Malformed { .. }) => {
                let message = e.to_string();
                let attribute = line_seven_attribute(&std::fs::read(path).unwrap());
                assert!(
                    message.starts_with("malformed XML at line 7, ")
                        && message.contains(&format!("the value of attribute `{attribute}`")),
                    "{name}: expected the error at attribute `{attribute}` of line 7, got {message}"
                );
                malformed.push(name);
            }
            Outcome::Refused(e) => other.push(format!("{name}: {e}")),
            Outcome::Panicked(m) => panic!("{name}: panicked: {m}"),
        }
    }
    println!(
        "encodings: {} files, {} converted, {} malformed after decoding, {} other errors",
        list.len(),
        converted.len(),
        malformed.len(),
        other.len()
    );
    assert!(other.is_empty(), "unexpected errors:\n{}", other.join("\n"));
    assert_eq!(converted, ENCODINGS_CONVERTED);
    assert_eq!(malformed.len(), ENCODINGS_MALFORMED);
}

/// An XML element reduced to what the conventions promise to keep: name, attributes (sorted),
/// its text joined and trimmed, and children grouped by name in document order.
#[derive(Debug, PartialEq)]
struct Node {
    name: String,
    attributes: Vec<(String, String)>,
    text: String,
    children: BTreeMap<String, Vec<Node>>,
}

/// The document as UTF-8, decoded by its XML declaration if it is not UTF-8 already.
fn utf8_text(xml: &[u8]) -> String {
    let xml = xml.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(xml);
    if let Ok(text) = std::str::from_utf8(xml) {
        return text.to_owned();
    }
    let mut reader = Reader::from_reader(xml);
    let Ok(Event::Decl(decl)) = reader.read_event() else {
        panic!("not UTF-8 and no XML declaration");
    };
    let encoding = decl.encoder().expect("known encoding");
    quick_xml::encoding::decode(xml, encoding)
        .expect("decodes")
        .into_owned()
}

fn tree(xml: &[u8]) -> Node {
    let text = utf8_text(xml);
    let mut reader = Reader::from_str(&text);
    let mut stack: Vec<Node> = Vec::new();
    let open = |e: &quick_xml::events::BytesStart<'_>| {
        let mut attributes: Vec<(String, String)> = e
            .attributes()
            .map(|a| {
                let a = a.expect("attribute");
                let value = a
                    .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    .expect("attribute value");
                (a.key.as_ref().to_owned(), value.into_owned())
            })
            .collect();
        attributes.sort();
        Node {
            name: e.name().as_ref().to_owned(),
            attributes,
            text: String::new(),
            children: BTreeMap::new(),
        }
    };
    let close = |stack: &mut Vec<Node>, mut node: Node| -> Option<Node> {
        node.text = node.text.trim_matches([' ', '\t', '\r', '\n']).to_owned();
        match stack.last_mut() {
            Some(parent) => {
                parent
                    .children
                    .entry(node.name.clone())
                    .or_default()
                    .push(node);
                None
            }
            None => Some(node),
        }
    };
    loop {
        match reader.read_event().expect("well-formed") {
            Event::Start(e) => stack.push(open(&e)),
            Event::Empty(e) => {
                if let Some(root) = close(&mut stack, open(&e)) {
                    return root;
                }
            }
            Event::End(_) => {
                let node = stack.pop().expect("open element");
                if let Some(root) = close(&mut stack, node) {
                    return root;
                }
            }
            Event::Text(t) => {
                if let Some(node) = stack.last_mut() {
                    node.text.push_str(&t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some(node) = stack.last_mut() {
                    node.text.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                if let Some(node) = stack.last_mut() {
                    let resolved = match r.resolve_char_ref().expect("char ref") {
                        Some(c) => c.to_string(),
                        None => quick_xml::escape::resolve_xml_entity(&r)
                            .expect("predefined entity")
                            .to_owned(),
                    };
                    node.text.push_str(&resolved);
                }
            }
            Event::Eof => panic!("no root element"),
            _ => {}
        }
    }
}

fn round_trip_files(c: &Path) -> Vec<PathBuf> {
    let mut all = files(&c.join("xml-feeds"), true);
    all.extend(
        files(&c.join("xml-soap"), true)
            .into_iter()
            .filter(|p| !p.ends_with(INVALID_ENCODING_FAULT)),
    );
    all.extend(files(&c.join("xml-docs/pom"), false));
    all.extend(files(&c.join("xml-docs/gpx"), false));
    all.extend(files(&c.join("xml-real"), false));
    all
}

#[test]
fn documents_round_trip_through_json() {
    let c = corpus();
    let list = round_trip_files(&c);
    let opts = XmlToJsonOptions::default();
    let mut ok = 0;
    let mut failures = Vec::new();
    for path in &list {
        let name = rel(&c, path);
        let xml = std::fs::read(path).expect("readable");
        let json = match xml_to_json(&xml, &opts) {
            Ok(json) => json,
            Err(e) => {
                failures.push(format!("{name}: does not convert: {e}"));
                continue;
            }
        };
        let regenerated = json_to_xml(&json, &JsonToXmlOptions::default()).expect("to XML");
        let again = xml_to_json(&regenerated, &opts).expect("regenerated XML converts");
        if again != json {
            failures.push(format!(
                "{name}: JSON differs after XML → JSON → XML → JSON"
            ));
            continue;
        }
        if tree(&xml) != tree(&regenerated) {
            failures.push(format!("{name}: regenerated XML differs structurally"));
            continue;
        }
        ok += 1;
    }
    println!(
        "round trip: {ok} of {} files; failures:\n  {}",
        list.len(),
        failures.join("\n  ")
    );
    assert!(
        ok >= MIN_ROUND_TRIPS,
        "{ok} files round-trip, the mark is {MIN_ROUND_TRIPS}:\n{}",
        failures.join("\n")
    );
}

fn load(c: &Path, path: &str) -> Value {
    let xml = std::fs::read(c.join(path)).expect("readable");
    xml_to_json(&xml, &XmlToJsonOptions::default()).expect("converts")
}

#[test]
fn repeated_pom_dependencies_become_an_array() {
    let c = corpus();
    let pom = load(
        &c,
        "xml-docs/pom/with-dependency-management-and-duplicates.xml",
    );
    let deps = &pom["project"]["dependencies"]["dependency"];
    assert_eq!(deps.as_array().map(Vec::len), Some(2), "{deps}");
    assert_eq!(deps[1]["artifactId"], "jackson-databind");
    let managed = &pom["project"]["dependencyManagement"]["dependencies"]["dependency"];
    assert_eq!(managed[1]["version"], "2.13.4.1");
}

#[test]
fn rss_items_become_an_array() {
    let c = corpus();
    let rss = load(&c, "xml-feeds/rss/tests/data/rss2sample.xml");
    let items = rss["rss"]["channel"]["item"]
        .as_array()
        .expect("item array");
    assert!(items.len() > 1);
}

#[test]
fn soap_faults_are_recognisable() {
    let c = corpus();
    let fault = load(&c, "xml-soap/savon/spec/fixtures/response/soap_fault.xml");
    let f = &fault["soap:Envelope"]["soap:Body"]["soap:Fault"];
    assert_eq!(f["faultcode"], "soap:Server");
    assert_eq!(f["faultstring"], "Fault occurred while processing.");
}

#[test]
fn large_xbrl_filings_convert() {
    let c = corpus();
    let list = files(&c.join("xml-large/xbrl"), false);
    assert_eq!(list.len(), 4, "the corpus changed");
    for path in &list {
        let xml = std::fs::read(path).expect("readable");
        let json = xml_to_json(&xml, &XmlToJsonOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // Every filing is one xbrl root element with its facts as children.
        let root = json.as_object().expect("an object");
        assert_eq!(root.len(), 1, "{}", path.display());
        let (_, facts) = root.iter().next().unwrap();
        assert!(
            facts.as_object().is_some_and(|f| f.len() > 100),
            "{}",
            path.display()
        );
    }
}

/// Set in the child process that measures peak memory: the file to convert, and the file to
/// write the figures to (the test harness owns the child's stdout).
const PEAK_CHILD: &str = "FERRY_XML_PEAK_OF";
const PEAK_OUT: &str = "FERRY_XML_PEAK_OUT";

/// A `/proc/self/status` figure in KiB (`VmRSS`, `VmHWM`); missing is a failure.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// The figure of docs/xml-json.md: converting the 4 MB XBRL filing needs about four times the
/// document in memory. Measured as the rise of the resident high-water mark (VmHWM) over the
/// resident size before the conversion (file already read), in a child process of this test
/// binary that runs only this test.
#[test]
fn converting_the_largest_xbrl_filing_needs_under_four_times_its_size() {
    if let Ok(path) = std::env::var(PEAK_CHILD) {
        let xml = std::fs::read(&path).expect("readable");
        // Reset the high-water mark to the current size (Linux); if this fails the peak can
        // only be overstated, never understated.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let before = status_kib("VmRSS:");
        let json = xml_to_json(&xml, &XmlToJsonOptions::default()).expect("converts");
        let peak = status_kib("VmHWM:");
        std::hint::black_box(&json);
        let out = std::env::var(PEAK_OUT).expect("PEAK_OUT set with PEAK_CHILD");
        std::fs::write(out, format!("{before} {peak}")).expect("figures written");
        return;
    }
    let c = corpus();
    let largest = files(&c.join("xml-large/xbrl"), false)
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("an XBRL filing");
    let size = std::fs::metadata(&largest).unwrap().len();
    let out_dir = tempfile::tempdir().unwrap();
    let out_file = out_dir.path().join("peak");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "converting_the_largest_xbrl_filing_needs_under_four_times_its_size",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PEAK_CHILD, &largest)
        .env(PEAK_OUT, &out_file)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("child test process");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the peak-memory child did not finish within 120 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "the peak-memory child failed: {status}");
    let figures = std::fs::read_to_string(&out_file).expect("the child wrote its figures");
    let kib: Vec<u64> = figures.split(' ').map(|v| v.parse().unwrap()).collect();
    let rise = (kib[1] - kib[0]) * 1024;
    println!(
        "{}: {:.1} MB, peak rise {:.1} MB = {:.1}x the document",
        rel(&c, &largest),
        size as f64 / 1e6,
        rise as f64 / 1e6,
        rise as f64 / size as f64
    );
    // The JSON holds at least the document's text: a rise below its size means the
    // measurement missed the conversion.
    assert!(
        rise > size,
        "peak rise {rise} B below the {size} B document"
    );
    assert!(
        rise < 4 * size,
        "peak rise {rise} B is 4x the {size} B document or more"
    );
}
