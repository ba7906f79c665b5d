//! Cost of a Rhai `filter` per message: building the script's view of the
//! message (body, headers, meta) and evaluating a compiled boolean expression,
//! exactly what the `filter` step does.
//!
//! Run with `cargo bench --bench steps`; criterion reports time per message.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a panic is the report; helpers are shared by `mod common`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use ferry::message::{Body, Message};
use ferry::script::{ScriptEngine, ScriptKind, ScriptLimits};
use ferry::steps::with_script_input;

fn filter(c: &mut Criterion) {
    let engine = ScriptEngine::new(&ScriptLimits::default());
    let script = engine
        .compile(
            r#"body.order.total >= 10.0 && headers["x-channel"] == "web""#,
            ScriptKind::Expression,
        )
        .expect("compiles");
    let body = serde_json::json!({
        "order": {
            "@id": "SO-1", "customer": {"name": "ACME", "tier": "gold"},
            "line": [{"@sku": "A", "qty": 2, "price": 19.99}, {"@sku": "B", "qty": 1, "price": 5.0}],
            "total": 44.98
        }
    });
    let mut msg = Message::new(Arc::from("bench"), "bench", Body::Json(body));
    msg.headers.insert("x-channel".into(), "web".into());
    c.bench_function("filter: small order, compiled Rhai expression", |b| {
        b.iter(|| {
            let ok = with_script_input(black_box(&msg), |input| engine.eval_bool(&script, input))
                .expect("view");
            assert!(ok.expect("evaluates"));
        })
    });
}

criterion_group!(benches, filter);
criterion_main!(benches);
