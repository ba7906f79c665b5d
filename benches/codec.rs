//! Throughput of the XML ⇄ JSON codec: a realistic ~1.5 KB order (the typical integration
//! message) and the largest SEC XBRL filing of the shared corpus (multi-MB, namespaces, large
//! escaped text blocks), in both directions.
//!
//! Run with `cargo bench --bench codec`; criterion reports bytes per second of XML input (and
//! of XML output for `json_to_xml`).
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a panic is the report; helpers are shared by `mod common`

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferry::codec::xml::{JsonToXmlOptions, XmlToJsonOptions, json_to_xml, xml_to_json};

const ORDER: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<order id="SO-2024-118734" channel="web" currency="EUR" created="2024-11-20T14:31:07Z">
  <customer id="C-88213" tier="gold">
    <name>Anneliese Müller-Lüdenscheidt</name>
    <email>anneliese.mueller@example.com</email>
    <phone>+49 30 1234567</phone>
    <address type="shipping">
      <street>Friedrichstraße 123</street>
      <city>Berlin</city>
      <zip>10117</zip>
      <country>DE</country>
    </address>
  </customer>
  <lines>
    <line no="1"><sku>WID-0001</sku><description>Widget, blue &amp; large</description><quantity>2</quantity><price>19.99</price></line>
    <line no="2"><sku>WID-0002</sku><description>Widget, red</description><quantity>1</quantity><price>17.50</price></line>
    <line no="3"><sku>GAD-0310</sku><description><![CDATA[Gadget <pro> edition]]></description><quantity>5</quantity><price>4.25</price></line>
    <line no="4"><sku>CAB-1000</sku><description>USB-C cable 2 m</description><quantity>3</quantity><price>8.90</price></line>
    <line no="5"><sku>SVC-WARR</sku><description>Extended warranty, 3 years</description><quantity>1</quantity><price>49.00</price></line>
  </lines>
  <payment method="card" status="authorized"><reference>AUTH-7Q2K9X</reference><amount>174.33</amount></payment>
  <notes>Leave the parcel with the neighbour if nobody answers.</notes>
  <total>174.33</total>
</order>
"#;

/// The largest filing in `corpus/xml-large/xbrl`.
fn largest_xbrl() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/xml-large/xbrl");
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus is required at {}: {e}", dir.display()));
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("an XBRL filing")
}

fn bench(c: &mut Criterion) {
    let xbrl = std::fs::read(largest_xbrl()).expect("readable");
    let inputs: [(&str, Vec<u8>); 2] = [("order_1_5kb", ORDER.as_bytes().to_vec()), ("xbrl", xbrl)];
    let to_json = XmlToJsonOptions::default();
    let to_xml = JsonToXmlOptions::default();

    let mut group = c.benchmark_group("xml_to_json");
    for (name, xml) in &inputs {
        group.throughput(Throughput::Bytes(xml.len() as u64));
        group.bench_function(*name, |b| {
            b.iter(|| xml_to_json(black_box(xml), &to_json).expect("converts"))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("json_to_xml");
    for (name, xml) in &inputs {
        let json = xml_to_json(xml, &to_json).expect("converts");
        let out_len = json_to_xml(&json, &to_xml).expect("writes").len();
        group.throughput(Throughput::Bytes(out_len as u64));
        group.bench_function(*name, |b| {
            b.iter(|| json_to_xml(black_box(&json), &to_xml).expect("writes"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
