//! Broker restarts in the middle of a stream: Ferry reconnects and, in the
//! end, every message arrived (at least once).
//!
//! Redis and NATS are restarted as private servers started from the
//! machine's own binaries on a free port, with persistence on: the shared
//! Redis keeps nothing on disk (`--save "" --appendonly no`), so restarting it
//! would lose the stream itself (and other people's data), which says nothing
//! about Ferry. RabbitMQ is restarted for real (`rabbitmqctl stop_app` /
//! `start_app`, a few seconds); a guard starts it again even if the test
//! fails. The tests in this file take one lock so they never overlap.
//!
//! Mosquitto is restarted the same way, as a private persistent broker
//! (`persistence true`; it writes its database on SIGTERM). It needs
//! `user root` when the tests run as root: otherwise Mosquitto switches to
//! the `mosquitto` user, cannot write into the 0700 temp folder, and comes
//! back without the sessions ("Error saving in-memory database … Permission
//! denied" in its log), which an earlier attempt took for Mosquitto losing
//! them.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a panic is the report; helpers are shared by `mod common`

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::services::{self, Private, unique};
use common::{Ferry, Flaky};

/// Each test runs on its own runtime; tokio's mutex works across runtimes.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Wait until the downstream accepted `n` requests (the stream is under way).
async fn under_way(d: &Flaky, n: usize) {
    common::eventually(
        "the stream to be under way",
        Duration::from_secs(60),
        || (d.accepted().len() >= n).then_some(()),
    )
    .await;
}

fn body(i: u64) -> String {
    serde_json::json!({ "n": i, "pad": "x".repeat(64) }).to_string()
}

const N: u64 = 1500;

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread")]
async fn redis_restart_mid_stream_loses_nothing() {
    common::within(
        "the stream through a redis restart to be delivered",
        Duration::from_secs(400),
        redis_restart_mid_stream_loses_nothing_steps(),
    )
    .await
}

async fn redis_restart_mid_stream_loses_nothing_steps() {
    use redis::AsyncCommands;
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(mut server) = Private::start("redis-server", |port, dir| {
        [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
            &dir.display().to_string(),
        ]
        .map(String::from)
        .to_vec()
    }) else {
        return;
    };
    let url = format!("redis://127.0.0.1:{}/0", server.port);
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    for i in 0..N {
        let _: String = c.xadd("in", "*", &[("body", body(i))]).await.unwrap();
    }
    let slow = Flaky::start_with_delay(|_| false, |_| false, Duration::from_millis(3)).await;
    let route = format!(
        "from:\n  redis: {{ url: \"{url}\", stream: in, consumer: c1, claim_idle: 2s }}\nconcurrency: 4\nto:\n  - http: {{ url: \"{}\" }}\n  - redis: {{ url: \"{url}\", stream: out }}\nerrors:\n  retry: {{ attempts: 8, backoff: 200ms, max_backoff: 2s }}\n",
        slow.url()
    );
    let ferry = Ferry::start(&[("r.yaml", &route)]).await;
    under_way(&slow, 200).await;
    server.restart();
    slow.wait_for(N as usize, Duration::from_secs(120)).await;
    let out = services::wait_until("every entry in `out`", Duration::from_secs(60), || {
        let client = client.clone();
        async move {
            let mut c = client.get_multiplexed_async_connection().await.ok()?;
            let r: redis::streams::StreamRangeReply = c.xrange_all("out").await.ok()?;
            let mut ns: Vec<u64> = r
                .ids
                .iter()
                .filter_map(|e| e.get::<String>("body"))
                .filter_map(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
                .filter_map(|v| v["n"].as_u64())
                .collect();
            ns.sort();
            ns.dedup();
            (ns.len() as u64 == N).then_some(ns)
        }
    })
    .await;
    ferry.stop().await;
    assert_eq!(out, (0..N).collect::<Vec<u64>>());
}

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread")]
async fn nats_restart_mid_stream_loses_nothing() {
    common::within(
        "the stream through a nats restart to be delivered",
        Duration::from_secs(400),
        nats_restart_mid_stream_loses_nothing_steps(),
    )
    .await
}

async fn nats_restart_mid_stream_loses_nothing_steps() {
    use async_nats::jetstream::{self, stream};
    use futures_util::StreamExt;
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(mut server) = Private::start("nats-server", |port, dir| {
        [
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-js",
            "-sd",
            &dir.display().to_string(),
        ]
        .map(String::from)
        .to_vec()
    }) else {
        return;
    };
    let url = format!("nats://127.0.0.1:{}", server.port);
    let js = jetstream::new(async_nats::connect(url.as_str()).await.unwrap());
    for name in ["IN", "OUT"] {
        js.create_stream(stream::Config {
            name: name.into(),
            subjects: vec![format!("{name}.>")],
            ..Default::default()
        })
        .await
        .unwrap();
    }
    for i in 0..N {
        js.publish("IN.x", body(i).into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let slow = Flaky::start_with_delay(|_| false, |_| false, Duration::from_millis(3)).await;
    let route = format!(
        "from:\n  nats: {{ url: \"{url}\", jetstream: {{ stream: IN, durable: ferry, ack_wait: 5s }} }}\nconcurrency: 4\nto:\n  - http: {{ url: \"{}\" }}\n  - nats: {{ url: \"{url}\", subject: OUT.x }}\nerrors:\n  retry: {{ attempts: 8, backoff: 200ms, max_backoff: 2s }}\n",
        slow.url()
    );
    let ferry = Ferry::start(&[("n.yaml", &route)]).await;
    under_way(&slow, 200).await;
    server.restart();
    slow.wait_for(N as usize, Duration::from_secs(120)).await;
    // Read OUT with a fresh client: everything is there, at least once.
    let js = jetstream::new(async_nats::connect(url.as_str()).await.unwrap());
    let consumer: jetstream::consumer::PullConsumer = js
        .get_stream("OUT")
        .await
        .unwrap()
        .create_consumer(jetstream::consumer::pull::Config {
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut seen = std::collections::BTreeSet::new();
    while (seen.len() as u64) < N {
        let m = tokio::time::timeout(Duration::from_secs(60), messages.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {N} in OUT", seen.len()))
            .unwrap()
            .unwrap();
        seen.insert(common::n_of(&m.payload));
    }
    ferry.stop().await;
    assert_eq!(seen.len() as u64, N);
}

/// Starts RabbitMQ's application again when dropped, so a failed test never
/// leaves the machine's broker stopped.
#[cfg(feature = "amqp")]
struct RabbitGuard;

#[cfg(feature = "amqp")]
impl RabbitGuard {
    fn ctl(arg: &str) {
        let out = common::output_within(
            Command::new("rabbitmqctl").arg(arg),
            Duration::from_secs(120),
        );
        assert!(out.status.success(), "rabbitmqctl {arg}: {out:?}");
    }
}

#[cfg(feature = "amqp")]
impl Drop for RabbitGuard {
    fn drop(&mut self) {
        // Bounded without panicking: this also runs while a test unwinds.
        let start = Command::new("rabbitmqctl")
            .arg("start_app")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let end = Instant::now() + Duration::from_secs(60);
        while !services::reachable(services::AMQP.1) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(200));
        }
        if let Ok(mut c) = start {
            while c.try_wait().ok().flatten().is_none() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[cfg(feature = "amqp")]
#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_restart_mid_stream_loses_nothing() {
    common::within(
        "the stream through a rabbitmq restart to be delivered",
        Duration::from_secs(400),
        rabbitmq_restart_mid_stream_loses_nothing_steps(),
    )
    .await
}

async fn rabbitmq_restart_mid_stream_loses_nothing_steps() {
    use futures_util::StreamExt;
    use lapin::options::*;
    use lapin::types::FieldTable;
    let _one = ONE_AT_A_TIME.lock().await;
    if !services::available(services::AMQP) {
        return;
    }
    if !services::installed("rabbitmqctl")
        || !common::output_within(
            Command::new("rabbitmqctl").arg("status"),
            Duration::from_secs(60),
        )
        .status
        .success()
    {
        if std::env::var("FERRY_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("rabbitmqctl cannot control the broker, and FERRY_REQUIRE_SERVICES=1");
        }
        eprintln!("SKIPPED: rabbitmqctl cannot control the broker");
        return;
    }
    let (input, output) = (unique("ferry_restart_in"), unique("ferry_restart_out"));
    let conn =
        lapin::Connection::connect(services::AMQP_URL, lapin::ConnectionProperties::default())
            .await
            .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for q in [&input, &output] {
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    for i in 0..N {
        ch.basic_publish(
            "".into(),
            input.as_str().into(),
            BasicPublishOptions::default(),
            body(i).as_bytes(),
            lapin::BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap();
    }
    ch.wait_for_confirms().await.unwrap();
    drop(conn);
    let slow = Flaky::start_with_delay(|_| false, |_| false, Duration::from_millis(3)).await;
    let route = format!(
        "from:\n  amqp: {{ url: \"{}\", queue: {input}, prefetch: 16 }}\nconcurrency: 4\nto:\n  - http: {{ url: \"{}\" }}\n  - amqp: {{ url: \"{}\", routing_key: {output} }}\nerrors:\n  retry: {{ attempts: 8, backoff: 200ms, max_backoff: 2s }}\n",
        services::AMQP_URL,
        slow.url(),
        services::AMQP_URL
    );
    let ferry = Ferry::start(&[("a.yaml", &route)]).await;
    under_way(&slow, 200).await;
    {
        let _guard = RabbitGuard;
        RabbitGuard::ctl("stop_app");
    }
    slow.wait_for(N as usize, Duration::from_secs(180)).await;
    let conn =
        lapin::Connection::connect(services::AMQP_URL, lapin::ConnectionProperties::default())
            .await
            .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut consumer = ch
        .basic_consume(
            output.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut seen = std::collections::BTreeSet::new();
    while (seen.len() as u64) < N {
        let d = tokio::time::timeout(Duration::from_secs(60), consumer.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {N} in {output}", seen.len()))
            .unwrap()
            .unwrap();
        seen.insert(common::n_of(&d.data));
    }
    ferry.stop().await;
    for q in [&input, &output] {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    assert_eq!(seen.len() as u64, N);
}

#[cfg(feature = "mqtt")]
#[tokio::test(flavor = "multi_thread")]
async fn mosquitto_restart_mid_stream_loses_nothing() {
    common::within(
        "the stream through a mosquitto restart to be delivered",
        Duration::from_secs(400),
        mosquitto_restart_mid_stream_loses_nothing_steps(),
    )
    .await
}

async fn mosquitto_restart_mid_stream_loses_nothing_steps() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(mut server) = Private::start("mosquitto", |port, dir| {
        let conf = dir.join("mosquitto.conf");
        // No limit on queued messages: the default (1000 per client) would
        // drop part of the stream before Ferry gets to it.
        std::fs::write(
            &conf,
            format!(
                "user root\nlog_dest stderr\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nmax_queued_messages 0\n",
                dir.display()
            ),
        )
        .unwrap();
        vec!["-c".into(), conf.display().to_string()]
    }) else {
        return;
    };
    let url = format!("mqtt://127.0.0.1:{}", server.port);
    let slow = Flaky::start_with_delay(|_| false, |_| false, Duration::from_millis(3)).await;
    // The route's persistent session (fixed client id, clean_session false,
    // the defaults) subscribes before anything is published.
    let route = format!(
        "from:\n  mqtt: {{ url: \"{url}\", topics: [\"in/#\"], client_id: ferry-restart }}\nconcurrency: 4\nto:\n  - http: {{ url: \"{}\" }}\nerrors:\n  retry: {{ attempts: 8, backoff: 200ms, max_backoff: 2s }}\n",
        slow.url()
    );
    let ferry = Ferry::start(&[("m.yaml", &route)]).await;
    // Publish the stream at QoS 1 and wait until the broker acknowledged all of it.
    let mut o = MqttOptions::new("publisher", "127.0.0.1", server.port);
    o.set_inflight(100);
    let (publisher, mut events) = AsyncClient::new(o, 256);
    let publishing = tokio::spawn(async move {
        for i in 0..N {
            publisher
                .publish("in/x", QoS::AtLeastOnce, false, body(i))
                .await
                .unwrap();
        }
        publisher
    });
    let mut acked = 0;
    while acked < N {
        match tokio::time::timeout(Duration::from_secs(30), events.poll())
            .await
            .expect("the broker stopped answering the publisher")
            .expect("publisher connection")
        {
            Event::Incoming(Packet::PubAck(_)) => acked += 1,
            Event::Outgoing(Outgoing::Disconnect) => break,
            _ => {}
        }
    }
    let publisher = publishing.await.unwrap();
    let _ = publisher.disconnect().await;
    under_way(&slow, 200).await;
    let before = slow.accepted().len();
    server.restart();
    // Most of the stream was still in the broker's session when it stopped.
    assert!(
        before < N as usize / 2,
        "{before} of {N} done before the restart"
    );
    assert!(
        !server.log().contains("Error saving"),
        "mosquitto did not save its database:\n{}",
        server.log()
    );
    let got = slow.wait_for(N as usize, Duration::from_secs(120)).await;
    ferry.stop().await;
    assert_eq!(got, (0..N).collect::<Vec<u64>>());
}
