//! Throughput of `fixed_width` parsing on the largest ACH file of the corpus:
//! `fixed-width-ach/.../PPD-200-batches-100000-entries.ach.gz` (200 batches,
//! 100,199 entries), gunzipped once before measuring, parsed with the NACHA
//! layout the tests use (`tests/fixtures/legacy/ach-layout.yaml`).
//!
//! Run with `cargo bench --bench ach`; criterion reports MB/s of ACH text
//! (`parse/bytes`) and records/s (`parse/records`, padding not counted) for
//! the same work. Needs `gzip` on the PATH (setup only, not measured).
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a panic is the report; helpers are shared by `mod common`

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferry::codec::fixed_width::{Layout, RecordSpec};
use serde::Deserialize;

/// The part of the step's options the fixture holds.
#[derive(Deserialize)]
struct AchLayout {
    record_length: usize,
    records: Vec<RecordSpec>,
}

fn ach_text() -> String {
    let gz = Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "../shared/corpus/fixed-width-ach/test/testdata/large-files/PPD-200-batches-100000-entries.ach.gz",
    );
    let out = std::process::Command::new("gzip")
        .arg("-dc")
        .arg(&gz)
        .output()
        .unwrap_or_else(|e| panic!("gzip -dc {}: {e}", gz.display()));
    assert!(out.status.success(), "gzip -dc {} failed", gz.display());
    String::from_utf8(out.stdout).expect("ACH text is ASCII")
}

fn layout() -> Layout {
    let yaml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy/ach-layout.yaml"),
    )
    .expect("the ACH layout fixture");
    let l: AchLayout = serde_saphyr::from_str(&yaml).expect("layout YAML");
    Layout::new(&[], &l.records, Some(l.record_length), false, true).expect("valid layout")
}

fn bench(c: &mut Criterion) {
    let text = ach_text();
    let layout = layout();
    let records = layout
        .parse(&text, false)
        .expect("the file parses")
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    // Counted without Ferry: 1 file header, 200 batch headers, 100,199 entry
    // details (the file's name rounds), 200 batch controls, 1 file control.
    assert_eq!(records, 100_601, "records in the file");
    let mut group = c.benchmark_group("parse");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("bytes", |b| {
        b.iter(|| layout.parse(black_box(&text), false).expect("parses"))
    });
    group.throughput(Throughput::Elements(records as u64));
    group.bench_function("records", |b| {
        b.iter(|| layout.parse(black_box(&text), false).expect("parses"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
