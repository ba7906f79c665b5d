//! Redis through Ferry, against the real server on 127.0.0.1:6379: a thousand
//! stream entries from one stream to another, failed entries claimed and
//! retried, the list reliable queue, and a clear error for bad credentials.
#![cfg(feature = "redis")]

mod common;

use std::time::Duration;

use common::services::{self, REDIS, REDIS_URL, unique};
use common::{Ferry, Flaky};
use redis::AsyncCommands;

async fn con() -> redis::aio::MultiplexedConnection {
    redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis")
}

fn body(i: u64) -> String {
    serde_json::json!({ "n": i, "pad": "x".repeat(64) }).to_string()
}

fn connector() -> (&'static str, String) {
    ("cache.yaml", format!("kind: redis\nurl: {REDIS_URL}\n"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_entries_move_between_streams_with_their_fields() {
    if !services::available(REDIS) {
        return;
    }
    let mut c = con().await;
    let (input, output) = (unique("ferry:in"), unique("ferry:out"));
    for i in 0..1000u64 {
        let _: String = c
            .xadd(&input, "*", &[("body", body(i)), ("origin", "test".into())])
            .await
            .unwrap();
    }
    let route = format!(
        "from:\n  redis: {{ connector: cache, stream: \"{input}\", consumer: c1 }}\nconcurrency: 16\nto:\n  - redis: {{ connector: cache, stream: \"{output}\" }}\n"
    );
    let (cname, ctext) = connector();
    let ferry = Ferry::start_with_connectors(&[("move.yaml", &route)], &[(cname, &ctext)]).await;
    let mut c2 = c.clone();
    let out = output.clone();
    services::wait_until(
        "1000 entries in the output stream",
        Duration::from_secs(60),
        || {
            let mut c = c2.clone();
            let out = out.clone();
            async move {
                let n: usize = c.xlen(&out).await.ok()?;
                (n >= 1000).then_some(())
            }
        },
    )
    .await;
    ferry.engine.shutdown().await;
    let entries: redis::streams::StreamRangeReply = c2.xrange_all(&output).await.unwrap();
    let mut ns: Vec<u64> = Vec::new();
    for e in &entries.ids {
        let b: String = e.get("body").unwrap();
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        ns.push(v["n"].as_u64().unwrap());
        let origin: String = e.get("origin").unwrap();
        assert_eq!(origin, "test", "fields travel as headers");
    }
    ns.sort();
    assert_eq!(ns, (0..1000).collect::<Vec<u64>>(), "all, no duplicates");
    let pending: redis::streams::StreamPendingReply = c.xpending(&input, "ferry").await.unwrap();
    assert_eq!(pending.count(), 0, "every entry acked");
    let _: () = c.del(&[&input, &output]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_entries_stay_pending_and_are_claimed_again() {
    if !services::available(REDIS) {
        return;
    }
    let mut c = con().await;
    let input = unique("ferry:in");
    for i in 0..200u64 {
        let _: String = c.xadd(&input, "*", &[("body", body(i))]).await.unwrap();
    }
    let downstream = Flaky::start(|n| n % 10 == 0, |_| false).await;
    let route = format!(
        "from:\n  redis: {{ connector: cache, stream: \"{input}\", consumer: c1, claim_idle: 300ms }}\nto:\n  - http: {{ url: \"{}\" }}\nerrors:\n  retry: {{ attempts: 1 }}\n",
        downstream.url()
    );
    let (cname, ctext) = connector();
    let ferry = Ferry::start_with_connectors(&[("flaky.yaml", &route)], &[(cname, &ctext)]).await;
    let got = downstream.wait_for(200, Duration::from_secs(60)).await;
    ferry.engine.shutdown().await;
    assert_eq!(got, (0..200).collect::<Vec<u64>>(), "none lost");
    let pending: redis::streams::StreamPendingReply = c.xpending(&input, "ferry").await.unwrap();
    assert_eq!(pending.count(), 0);
    let _: () = c.del(&input).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_list_is_a_reliable_queue() {
    if !services::available(REDIS) {
        return;
    }
    let mut c = con().await;
    let (input, output) = (unique("ferry:list"), unique("ferry:list-out"));
    for i in 0..100u64 {
        let _: usize = c.lpush(&input, body(i)).await.unwrap();
    }
    let downstream = Flaky::start(|n| n % 10 == 0, |_| false).await;
    let route = format!(
        "from:\n  redis: {{ connector: cache, list: \"{input}\", consumer: c1, retry_delay: 10ms }}\nto:\n  - http: {{ url: \"{}\" }}\n  - redis: {{ connector: cache, list: \"{output}\" }}\nerrors:\n  retry: {{ attempts: 1 }}\n",
        downstream.url()
    );
    let (cname, ctext) = connector();
    let ferry = Ferry::start_with_connectors(&[("list.yaml", &route)], &[(cname, &ctext)]).await;
    let got = downstream.wait_for(100, Duration::from_secs(60)).await;
    ferry.engine.shutdown().await;
    assert_eq!(got, (0..100).collect::<Vec<u64>>());
    let left: usize = c.llen(&input).await.unwrap();
    let processing: usize = c.llen(format!("{input}:processing:c1")).await.unwrap();
    assert_eq!((left, processing), (0, 0));
    let _: () = c
        .del(&[&input, &output, &format!("{input}:processing:c1")])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_stops_the_route_from_starting_with_a_clear_error() {
    if !services::available(REDIS) {
        return;
    }
    let route = "from:\n  http: { path: /in }\nto:\n  - redis: { connector: cache, stream: s }\n";
    let conn = "kind: redis\nurl: redis://nobody:wrong-secret@127.0.0.1:6379/0\n";
    let failed = Ferry::try_start(&[("r.yaml", route)], &[("cache.yaml", conn)])
        .await
        .err()
        .expect("route must not start");
    let reason = &failed[0].1;
    assert!(reason.contains("cannot connect to redis"), "{reason}");
    assert!(
        !reason.contains("wrong-secret"),
        "password leaked: {reason}"
    );
}
