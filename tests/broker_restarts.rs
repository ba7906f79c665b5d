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
//! Mosquitto is not restarted here: with the machine's Mosquitto 2.0.11, a
//! private persistent broker restarted with SIGTERM came back without the
//! persistent sessions (no database written), so nothing about Ferry could be
//! measured. Ferry reconnecting to its MQTT session is covered by the
//! failure test in tests/mqtt.rs (a failed message makes it reconnect) and the
//! kill -9 test (a new process resumes the session).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::services::{self, unique};
use common::{Ferry, Flaky};

/// Each test runs on its own runtime; tokio's mutex works across runtimes.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A broker process of our own, restartable on the same port and data folder.
struct Private {
    program: &'static str,
    args: Vec<String>,
    port: u16,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Private {
    /// Start `program` (None when it is not installed: the caller skips).
    fn start(program: &'static str, args: impl Fn(u16, &Path) -> Vec<String>) -> Option<Private> {
        if Command::new(program).arg("--version").output().is_err() {
            if std::env::var("FERRY_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("{program} is not installed, and FERRY_REQUIRE_SERVICES=1");
            }
            eprintln!("SKIPPED: {program} not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = common::closed_port();
        let mut p = Private {
            program,
            args: args(port, dir.path()),
            port,
            child: None,
            _dir: dir,
        };
        p.spawn();
        Some(p)
    }

    fn spawn(&mut self) {
        let child = Command::new(self.program)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(20);
        while !services::reachable(&format!("127.0.0.1:{}", self.port)) {
            assert!(Instant::now() < end, "{} did not start", self.program);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        self.stop();
    }
}

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
    ferry.engine.shutdown().await;
    assert_eq!(out, (0..N).collect::<Vec<u64>>());
}

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread")]
async fn nats_restart_mid_stream_loses_nothing() {
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
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        seen.insert(v["n"].as_u64().unwrap());
    }
    ferry.engine.shutdown().await;
    assert_eq!(seen.len() as u64, N);
}

/// Starts RabbitMQ's application again when dropped, so a failed test never
/// leaves the machine's broker stopped.
#[cfg(feature = "amqp")]
struct RabbitGuard;

#[cfg(feature = "amqp")]
impl RabbitGuard {
    fn ctl(arg: &str) {
        let out = Command::new("rabbitmqctl").arg(arg).output().unwrap();
        assert!(out.status.success(), "rabbitmqctl {arg}: {out:?}");
    }
}

#[cfg(feature = "amqp")]
impl Drop for RabbitGuard {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").arg("start_app").output();
        let end = Instant::now() + Duration::from_secs(60);
        while !services::reachable(services::AMQP.1) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[cfg(feature = "amqp")]
#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_restart_mid_stream_loses_nothing() {
    use futures_util::StreamExt;
    use lapin::options::*;
    use lapin::types::FieldTable;
    let _one = ONE_AT_A_TIME.lock().await;
    if !services::available(services::AMQP) {
        return;
    }
    if Command::new("rabbitmqctl")
        .arg("status")
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
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
        let v: serde_json::Value = serde_json::from_slice(&d.data).unwrap();
        seen.insert(v["n"].as_u64().unwrap());
    }
    ferry.engine.shutdown().await;
    for q in [&input, &output] {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    assert_eq!(seen.len() as u64, N);
}
