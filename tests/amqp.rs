//! RabbitMQ through Ferry, against the real broker on 127.0.0.1:5672: a
//! thousand messages from one queue to another, failures requeued or
//! dead-lettered, and clear start errors for bad credentials and missing queues.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a panic is the report; helpers are shared by `mod common`
#![cfg(feature = "amqp")]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::services::{self, AMQP, AMQP_URL, unique};
use common::{Ferry, Flaky};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

async fn channel() -> (Connection, Channel) {
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let ch = conn.create_channel().await.unwrap();
    (conn, ch)
}

async fn declare(ch: &Channel, name: &str, args: FieldTable) {
    ch.queue_declare(name.into(), QueueDeclareOptions::default(), args)
        .await
        .unwrap();
}

async fn publish_numbers(ch: &Channel, queue: &str, n: usize) {
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..n {
        let mut headers = FieldTable::default();
        headers.insert("origin".into(), AMQPValue::LongString("test".into()));
        let body = serde_json::json!({ "n": i, "pad": "x".repeat(64) }).to_string();
        ch.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default()
                .with_headers(headers)
                .with_content_type("application/json".into()),
        )
        .await
        .unwrap();
    }
    ch.wait_for_confirms().await.unwrap();
}

/// Consume `queue` until `n` messages arrived; returns their `n` fields and
/// the `origin` header of the first.
async fn collect(ch: &Channel, queue: &str, n: usize, timeout: Duration) -> (Vec<u64>, String) {
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let end = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut origin = String::new();
    while got.len() < n {
        let left = end.saturating_duration_since(Instant::now());
        let d = match tokio::time::timeout(left, consumer.next()).await {
            Ok(Some(Ok(d))) => d,
            other => panic!(
                "got {} of {n} messages from {queue} before {other:?}",
                got.len()
            ),
        };
        got.push(common::n_of(&d.data));
        if let (true, Some(AMQPValue::LongString(s))) = (
            origin.is_empty(),
            d.properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get("origin")),
        ) {
            origin = String::from_utf8_lossy(s.as_bytes()).into_owned();
        }
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    (got, origin)
}

async fn message_count(ch: &Channel, queue: &str) -> u32 {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap()
    .message_count()
}

async fn delete(ch: &Channel, queues: &[&str]) {
    for q in queues {
        let _ = ch
            .queue_delete((*q).into(), QueueDeleteOptions::default())
            .await;
    }
}

fn connector() -> (&'static str, String) {
    (
        "rabbit.yaml",
        format!("kind: amqp\nurl: {AMQP_URL}\nprefetch: 32\n"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_messages_move_between_queues_with_headers() {
    if !services::available(AMQP) {
        return;
    }
    let (input, output) = (unique("ferry_in"), unique("ferry_out"));
    let (conn, ch) = channel().await;
    declare(&ch, &input, FieldTable::default()).await;
    declare(&ch, &output, FieldTable::default()).await;
    publish_numbers(&ch, &input, 1000).await;

    let route = format!(
        "from:\n  amqp: {{ connector: rabbit, queue: {input} }}\nconcurrency: 16\nto:\n  - amqp: {{ connector: rabbit, routing_key: {output} }}\n"
    );
    let (cname, ctext) = connector();
    let ferry = Ferry::start_with_connectors(&[("move.yaml", &route)], &[(cname, &ctext)]).await;
    // Read on a channel of its own: closing it below puts back anything it
    // received but never acked, such as a late duplicate.
    let reader = conn.create_channel().await.unwrap();
    let (got, origin) = collect(&reader, &output, 1000, Duration::from_secs(60)).await;
    ferry.stop().await;
    reader.close(200, "done".into()).await.unwrap();

    common::assert_each_once("messages read from the output queue", got, 0..1000);
    assert_eq!(
        origin, "test",
        "application headers travel with the message"
    );
    assert_eq!(message_count(&ch, &input).await, 0, "every input was acked");
    assert_eq!(
        message_count(&ch, &output).await,
        0,
        "no duplicates, read or unread"
    );
    delete(&ch, &[&input, &output]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_messages_are_requeued_and_delivered_on_redelivery() {
    if !services::available(AMQP) {
        return;
    }
    let input = unique("ferry_in");
    let (_conn, ch) = channel().await;
    declare(&ch, &input, FieldTable::default()).await;
    publish_numbers(&ch, &input, 200).await;
    // The downstream refuses every tenth message the first time (HTTP 500);
    // with no retries in the route, the message is nacked and requeued.
    let downstream = Flaky::start(|n| n % 10 == 0, |_| false).await;
    let route = format!(
        "from:\n  amqp: {{ connector: rabbit, queue: {input}, requeue_delay: 10ms }}\nto:\n  - http: {{ url: \"{}\" }}\nerrors:\n  retry: {{ attempts: 1 }}\n",
        downstream.url()
    );
    let (cname, ctext) = connector();
    let ferry = Ferry::start_with_connectors(&[("flaky.yaml", &route)], &[(cname, &ctext)]).await;
    let got = downstream.wait_for(200, Duration::from_secs(60)).await;
    ferry.stop().await;
    assert_eq!(got, (0..200).collect::<Vec<u64>>(), "none lost");
    assert_eq!(
        downstream.refused.load(std::sync::atomic::Ordering::SeqCst),
        20
    );
    assert_eq!(message_count(&ch, &input).await, 0, "all acked in the end");
    delete(&ch, &[&input]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_messages_go_to_the_queues_dead_letter_exchange() {
    if !services::available(AMQP) {
        return;
    }
    let (input, dlq) = (unique("ferry_in"), unique("ferry_dlq"));
    let (_conn, ch) = channel().await;
    // Every tenth message is refused for good (HTTP 400).
    let downstream = Flaky::start(|_| false, |n| n % 10 == 0).await;
    let route = format!(
        r#"from:
  amqp:
    connector: rabbit
    queue: {input}
    on_failure: reject
    declare:
      queues:
        - {{ name: {dlq}, durable: false }}
        - {{ name: {input}, durable: false, dead_letter_exchange: "", dead_letter_routing_key: {dlq} }}
to:
  - http: {{ url: "{}" }}
"#,
        downstream.url()
    );
    let (cname, ctext) = connector();
    // The route declares the input queue (with its dead-letter settings).
    let ferry = Ferry::start_with_connectors(&[("dlx.yaml", &route)], &[(cname, &ctext)]).await;
    publish_numbers(&ch, &input, 100).await;
    let ok = downstream.wait_for(90, Duration::from_secs(60)).await;
    let (dead, _) = collect(&ch, &dlq, 10, Duration::from_secs(60)).await;
    ferry.stop().await;
    assert!(ok.iter().all(|n| n % 10 != 0));
    assert_eq!(
        dead.iter().copied().collect::<BTreeSet<u64>>(),
        (0..100).step_by(10).collect::<BTreeSet<u64>>()
    );
    delete(&ch, &[&input, &dlq]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_stops_the_route_from_starting_with_a_clear_error() {
    if !services::available(AMQP) {
        return;
    }
    let route = "from:\n  amqp: { connector: rabbit, queue: whatever }\n";
    let conn = "kind: amqp\nurl: amqp://guest:wrong-password@127.0.0.1:5672/%2f\n";
    let started = Instant::now();
    let failed = Ferry::try_start(&[("r.yaml", route)], &[("rabbit.yaml", conn)])
        .await
        .err()
        .expect("route must not start");
    assert!(started.elapsed() < Duration::from_secs(15));
    let reason = &failed[0].1;
    assert!(
        reason.contains("ACCESS_REFUSED") || reason.contains("wrong user or password"),
        "{reason}"
    );
    assert!(
        !reason.contains("wrong-password"),
        "password leaked: {reason}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_queue_stops_the_route_from_starting_with_a_clear_error() {
    if !services::available(AMQP) {
        return;
    }
    let queue = unique("ferry_missing");
    let route = format!("from:\n  amqp: {{ url: \"{AMQP_URL}\", queue: {queue} }}\n");
    let failed = Ferry::try_start(&[("r.yaml", &route)], &[])
        .await
        .err()
        .expect("route must not start");
    let reason = &failed[0].1;
    assert!(
        reason.contains(&format!("queue `{queue}` does not exist")),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_broker_fails_fast() {
    let port = common::closed_port();
    let route = format!(
        "from:\n  amqp: {{ url: \"amqp://guest:guest@127.0.0.1:{port}/%2f\", queue: q }}\n"
    );
    let started = Instant::now();
    let failed = Ferry::try_start(&[("r.yaml", &route)], &[])
        .await
        .err()
        .expect("route must not start");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(
        failed[0].1.contains("cannot connect to amqp"),
        "{}",
        failed[0].1
    );
}
