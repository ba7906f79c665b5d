//! `kill -9` of a real `ferry run` while it consumes from a broker: what it
//! had not acknowledged is delivered by the next run, so in the end every
//! message reached the downstream (at least once).
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a panic is the report; helpers are shared by `mod common`

mod common;

use std::time::Duration;

use common::Flaky;
use common::services::{self, FerryProcess, unique, write_files};

const N: usize = 300;

fn body(i: usize) -> String {
    serde_json::json!({ "n": i, "pad": "x".repeat(64) }).to_string()
}

/// Run Ferry on `route`, kill it with SIGKILL mid-stream, run it again, and
/// check that every message arrived.
async fn kill_and_rerun(route: String, slow: &Flaky) {
    kill_and_rerun_then(route, slow, async {}).await
}

/// Like [`kill_and_rerun`], running `publish` once the first run's routes
/// are up (its admin endpoint answers only after they started).
async fn kill_and_rerun_then(
    route: String,
    slow: &Flaky,
    publish: impl std::future::Future<Output = ()>,
) {
    common::within(
        "two ferry runs around a kill -9 to deliver the stream",
        Duration::from_secs(300),
        kill_and_rerun_steps(route, slow, publish),
    )
    .await
}

async fn kill_and_rerun_steps(
    route: String,
    slow: &Flaky,
    publish: impl std::future::Future<Output = ()>,
) {
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &[("routes/r.yaml", route)]);
    let mut first = FerryProcess::start(dir.path());
    publish.await;
    common::eventually(
        "the stream to be under way",
        Duration::from_secs(60),
        || (slow.accepted().len() >= 50).then_some(()),
    )
    .await;
    first.kill9();
    let before = slow.accepted().len();
    assert!(before < N, "the first run must not finish the stream");
    let mut second = FerryProcess::start(dir.path());
    let got = slow.wait_for(N, Duration::from_secs(120)).await;
    second.terminate();
    assert_eq!(got, (0..N as u64).collect::<Vec<u64>>());
}

fn slow_downstream() -> impl std::future::Future<Output = Flaky> {
    Flaky::start_with_delay(|_| false, |_| false, Duration::from_millis(20))
}

#[cfg(feature = "amqp")]
#[tokio::test(flavor = "multi_thread")]
async fn amqp_messages_unacked_at_kill_are_redelivered_to_the_next_run() {
    use lapin::options::*;
    use lapin::types::FieldTable;
    if !services::available(services::AMQP) {
        return;
    }
    let queue = unique("ferry_kill");
    let conn =
        lapin::Connection::connect(services::AMQP_URL, lapin::ConnectionProperties::default())
            .await
            .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..N {
        ch.basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            body(i).as_bytes(),
            lapin::BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    ch.wait_for_confirms().await.unwrap();
    let slow = slow_downstream().await;
    let route = format!(
        "from:\n  amqp: {{ url: \"{}\", queue: {queue}, prefetch: 8 }}\nconcurrency: 2\nto:\n  - http: {{ url: \"{}\" }}\n",
        services::AMQP_URL,
        slow.url()
    );
    kill_and_rerun(route, &slow).await;
    let _ = ch
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
}

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread")]
async fn jetstream_messages_unacked_at_kill_are_redelivered_to_the_next_run() {
    use async_nats::jetstream::{self, stream};
    if !services::available(services::NATS) {
        return;
    }
    let js = jetstream::new(async_nats::connect(services::NATS_URL).await.unwrap());
    let name = unique("FERRY_KILL");
    js.create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![format!("{name}.>")],
        ..Default::default()
    })
    .await
    .unwrap();
    for i in 0..N {
        js.publish(format!("{name}.x"), body(i).into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let slow = slow_downstream().await;
    let route = format!(
        "from:\n  nats: {{ url: \"{}\", jetstream: {{ stream: {name}, durable: ferry, ack_wait: 2s, max_ack_pending: 8 }} }}\nconcurrency: 2\nto:\n  - http: {{ url: \"{}\" }}\n",
        services::NATS_URL,
        slow.url()
    );
    kill_and_rerun(route, &slow).await;
    let _ = js.delete_stream(&name).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread")]
async fn redis_entries_pending_at_kill_are_redelivered_to_the_next_run() {
    use redis::AsyncCommands;
    if !services::available(services::REDIS) {
        return;
    }
    let mut c = redis::Client::open(services::REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = unique("ferry:kill");
    for i in 0..N {
        let _: String = c.xadd(&key, "*", &[("body", body(i))]).await.unwrap();
    }
    let slow = slow_downstream().await;
    let route = format!(
        "from:\n  redis: {{ url: \"{}\", stream: \"{key}\", consumer: c1, batch: 8 }}\nconcurrency: 2\nto:\n  - http: {{ url: \"{}\" }}\n",
        services::REDIS_URL,
        slow.url()
    );
    kill_and_rerun(route, &slow).await;
    let _: () = c.del(&key).await.unwrap();
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread")]
async fn postgres_rows_unmarked_at_kill_are_delivered_by_the_next_run() {
    if !services::available(services::POSTGRES) {
        return;
    }
    let (c, conn) = tokio_postgres::connect(services::POSTGRES_URL, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let table = unique("ferry_kill");
    c.batch_execute(&format!(
        "CREATE TABLE {table} (id bigserial PRIMARY KEY, n int NOT NULL, done boolean NOT NULL DEFAULT false);
         INSERT INTO {table} (n) SELECT generate_series(0, {});",
        N - 1
    ))
    .await
    .unwrap();
    let slow = slow_downstream().await;
    let route = format!(
        "from:\n  postgres: {{ url: \"{}\", query: \"SELECT id, n FROM {table} WHERE NOT done ORDER BY id LIMIT 8\", key: id, mark: \"UPDATE {table} SET done = true WHERE id = $1\" }}\nconcurrency: 2\nto:\n  - http: {{ url: \"{}\" }}\n",
        services::POSTGRES_URL,
        slow.url()
    );
    kill_and_rerun(route, &slow).await;
    let left: i64 = c
        .query_one(&format!("SELECT count(*) FROM {table} WHERE NOT done"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    c.batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

#[cfg(feature = "mqtt")]
#[tokio::test(flavor = "multi_thread")]
async fn mqtt_messages_unacked_at_kill_are_resent_to_the_next_run() {
    use rumqttc::{AsyncClient, MqttOptions, QoS};
    if !services::available(services::MQTT) {
        return;
    }
    let id = unique("ferry_kill");
    let slow = slow_downstream().await;
    let route = format!(
        "from:\n  mqtt: {{ url: \"{}\", topics: [\"{id}/#\"], client_id: {id} }}\nconcurrency: 2\nto:\n  - http: {{ url: \"{}\" }}\n",
        services::MQTT_URL,
        slow.url()
    );
    let mut o = MqttOptions::new(unique("pub"), "127.0.0.1", 1883);
    o.set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(o, 1024);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    // Publish once Ferry's persistent session subscribed: the broker keeps
    // what Ferry has not acknowledged for the next run of the same client id.
    let publish = async {
        for i in 0..N {
            client
                .publish(format!("{id}/x"), QoS::AtLeastOnce, false, body(i))
                .await
                .unwrap();
        }
    };
    kill_and_rerun_then(route, &slow, publish).await;
}
