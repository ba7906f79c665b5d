//! Embedded queue throughput: 1 KiB messages enqueued by 32 concurrent
//! producers, leased and acked by 8 consumers, for each fsync policy. One
//! iteration moves 2,000 messages through enqueue + dequeue + ack.
//!
//! Run with `cargo bench --bench queue`; criterion reports messages per second.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a panic is the report; helpers are shared by `mod common`

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferry::message::{Body, Headers};
use ferry::queue_store::{FsyncPolicy, QueueStore, StoredMessage};

const BATCH: usize = 2_000;

async fn one_batch(store: &QueueStore) {
    let msg = Arc::new(StoredMessage {
        id: "bench".into(),
        source: "bench".into(),
        received_at: chrono::Utc::now(),
        headers: Headers::new(),
        body: Body::Bytes(Bytes::from(vec![b'x'; 1024])),
    });
    let mut tasks = Vec::new();
    for p in 0..32 {
        let (store, msg) = (store.clone(), msg.clone());
        tasks.push(tokio::spawn(async move {
            for _ in (p..BATCH).step_by(32) {
                store.enqueue("bench", &msg).await.expect("enqueue");
            }
        }));
    }
    for c in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in (c..BATCH).step_by(8) {
                let lease = store.dequeue("bench").await.expect("dequeue");
                store.ack(&lease).await.expect("ack");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
}

fn queue(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut group = c.benchmark_group("queue 1KiB enqueue+dequeue+ack");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for (name, policy) in [
        ("fsync always", FsyncPolicy::Always),
        (
            "fsync interval 100ms",
            FsyncPolicy::Interval(Duration::from_millis(100)),
        ),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = QueueStore::open(&dir.path().join("bench.redb"), policy).expect("open");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                rt.block_on(async {
                    for _ in 0..iters {
                        one_batch(&store).await;
                    }
                });
                start.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, queue);
criterion_main!(benches);
