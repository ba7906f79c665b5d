//! Broker capabilities the docs promise that no other test ran, against the
//! real services on loopback: Redis pub/sub (source, pattern source, sink, and
//! what a subscriber that is not there loses), MQTT QoS 0 both ways (and that
//! a failed QoS 0 message costs only itself), NATS queue groups (instances in
//! one group share a subject, each message once; without a group each gets
//! all), and the PostgreSQL `listen` wake-up (a NOTIFY brings a new outbox row
//! at once, although the poll interval is an hour).
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a panic is the report; helpers are shared by `mod common`
#![cfg(all(
    feature = "redis",
    feature = "mqtt",
    feature = "nats",
    feature = "postgres"
))]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::services::{self, MQTT, MQTT_URL, NATS, NATS_URL, POSTGRES, POSTGRES_URL, REDIS};
use common::services::{REDIS_URL, unique};
use common::{Ferry, Flaky, n_of, within};
use futures_util::StreamExt;
use redis::AsyncCommands;

/// How long one test may take in all: a hang anywhere (the engine's start or
/// shutdown, a broker call) fails the test instead of hanging the suite.
const DEADLINE: Duration = Duration::from_secs(120);

fn never(_: u64) -> bool {
    false
}

fn body(n: u64) -> String {
    serde_json::json!({ "n": n }).to_string()
}

/// `accepted`, sorted, must be exactly `expected`: nothing lost, nothing twice.
fn assert_each_once(what: &str, mut accepted: Vec<u64>, expected: impl Iterator<Item = u64>) {
    accepted.sort();
    assert_eq!(accepted, expected.collect::<Vec<u64>>(), "{what}");
}

// ---------------------------------------------------------------- Redis pub/sub

async fn numsub(c: &mut redis::aio::MultiplexedConnection, channel: &str) -> usize {
    let (_, n): (String, usize) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(c)
        .await
        .unwrap();
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_channel_source_gets_only_what_is_published_while_it_is_subscribed() {
    within("the test to finish", DEADLINE, async {
        if !services::available(REDIS) {
            return;
        }
        let mut c = services::redis_con().await;
        let channel = unique("ferry:chan");
        // No subscriber yet: Redis counts no receiver and keeps nothing.
        for n in 0..5 {
            let receivers: usize = c.publish(&channel, body(n)).await.unwrap();
            assert_eq!(receivers, 0);
        }
        let downstream = Flaky::start(never, never).await;
        let route = format!(
            "from:\n  redis: {{ url: \"{REDIS_URL}\", channel: \"{channel}\" }}\nto:\n  - http: {{ url: \"{}\" }}\n",
            downstream.url()
        );
        let ferry = Ferry::start(&[("sub.yaml", &route)]).await;
        // The route is ready once Redis confirmed the SUBSCRIBE.
        for n in 5..55 {
            let receivers: usize = c.publish(&channel, body(n)).await.unwrap();
            assert_eq!(receivers, 1, "message {n}: the route is the one subscriber");
        }
        downstream.wait_for(50, Duration::from_secs(30)).await;
        ferry.engine.shutdown().await;
        let receivers: usize = c.publish(&channel, body(99)).await.unwrap();
        assert_eq!(receivers, 0, "a stopped route no longer listens");
        assert_each_once(
            "what was published while subscribed, once; nothing from before",
            downstream.accepted(),
            5..55,
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_channel_pattern_source_gets_every_matching_channel() {
    within("the test to finish", DEADLINE, async {
        if !services::available(REDIS) {
            return;
        }
        let mut c = services::redis_con().await;
        let prefix = unique("ferry:pat");
        let downstream = Flaky::start(never, never).await;
        let route = format!(
            "from:\n  redis: {{ url: \"{REDIS_URL}\", channel: \"{prefix}:*\" }}\nto:\n  - http: {{ url: \"{}\" }}\n",
            downstream.url()
        );
        let ferry = Ferry::start(&[("psub.yaml", &route)]).await;
        for n in 0..30u64 {
            let channel = format!("{prefix}:{}", ["a", "b", "c"][n as usize % 3]);
            let receivers: usize = c.publish(&channel, body(n)).await.unwrap();
            assert_eq!(receivers, 1, "{channel} matches the pattern");
        }
        let other: usize = c
            .publish(format!("{prefix}-other"), body(99))
            .await
            .unwrap();
        assert_eq!(other, 0, "a channel outside the pattern reaches no one");
        downstream.wait_for(30, Duration::from_secs(30)).await;
        ferry.engine.shutdown().await;
        assert_each_once("every matching channel", downstream.accepted(), 0..30);
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_channel_sink_publishes_to_subscribers_and_counts_an_unheard_message_delivered() {
    within("the test to finish", DEADLINE, async {
        if !services::available(REDIS) {
            return;
        }
        let mut c = services::redis_con().await;
        let channel = unique("ferry:out");
        let mut subscriber = redis::Client::open(REDIS_URL)
            .unwrap()
            .get_async_pubsub()
            .await
            .unwrap();
        subscriber.subscribe(&channel).await.unwrap();
        let route = format!(
            "from:\n  http: {{ path: /in }}\nto:\n  - redis: {{ url: \"{REDIS_URL}\", channel: \"{channel}\" }}\n"
        );
        let ferry = Ferry::start(&[("pub.yaml", &route)]).await;
        let http = common::http_client();
        let post = |n: u64| {
            http.post(ferry.url("/in"))
                .body(body(n))
                .header("content-type", "application/json")
                .send()
        };
        for n in (0..20).chain([999]) {
            let r = post(n).await.unwrap();
            assert_eq!(r.status(), 200, "message {n}");
        }
        let mut heard = Vec::new();
        {
            let mut messages = subscriber.on_message();
            // 999 was published last: a duplicate of an earlier one comes before it.
            while heard.last() != Some(&999) {
                let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
                    .await
                    .unwrap_or_else(|_| panic!("heard only {heard:?}"))
                    .expect("the subscription ended");
                heard.push(n_of(m.get_payload_bytes()));
            }
        }
        assert_each_once("each published once", heard, (0..20).chain([999]));
        // Nobody listening: Redis takes the PUBLISH, the message reaches no one,
        // and Ferry reports it delivered (pub/sub keeps nothing to deliver later).
        drop(subscriber);
        services::wait_until("no subscriber left", Duration::from_secs(10), || {
            let mut c = c.clone();
            let channel = channel.clone();
            async move { (numsub(&mut c, &channel).await == 0).then_some(()) }
        })
        .await;
        let r = post(1000).await.unwrap();
        assert_eq!(
            r.status(),
            200,
            "an unheard PUBLISH still counts as delivered"
        );
        assert_eq!(numsub(&mut c, &channel).await, 0);
        ferry.engine.shutdown().await;
    })
    .await
}

// ---------------------------------------------------------------- MQTT QoS 0

/// A test client on the shared Mosquitto; with `subscribe`, the returned
/// channel carries `(topic, qos, payload)` of what it receives, once the
/// broker acknowledged the subscription.
async fn mqtt_client(
    subscribe: Option<&str>,
) -> (
    rumqttc::AsyncClient,
    tokio::sync::mpsc::UnboundedReceiver<(String, rumqttc::QoS, Vec<u8>)>,
) {
    use rumqttc::{Event, MqttOptions, Packet, QoS};
    let mut o = MqttOptions::new(unique("test"), "127.0.0.1", 1883);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(o, 1024);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let mut subscribed_tx = Some(subscribed_tx);
    match subscribe {
        // QoS 1: what arrives at QoS 0 was sent at QoS 0.
        Some(t) => client.subscribe(t, QoS::AtLeastOnce).await.unwrap(),
        None => drop(subscribed_tx.take().map(|s| s.send(()))),
    }
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send((p.topic.clone(), p.qos, p.payload.to_vec()));
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(s) = subscribed_tx.take() {
                        let _ = s.send(());
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
        .await
        .expect("no SUBACK from Mosquitto within 10 s")
        .unwrap();
    (client, rx)
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtt_qos0_source_and_sink_carry_messages_at_qos_0() {
    within("the test to finish", DEADLINE, async {
        use rumqttc::QoS;
        if !services::available(MQTT) {
            return;
        }
        let id = unique("ferry");
        let (_sub, mut received) = mqtt_client(Some(&format!("out/{id}/#"))).await;
        // The sink's topic names the QoS the source received each message at.
        let route = format!(
            "from:\n  mqtt: {{ url: \"{MQTT_URL}\", topics: [\"in/{id}/+\"], qos: 0, client_id: {id}-src }}\nto:\n  - mqtt: {{ url: \"{MQTT_URL}\", topic: \"out/{id}/{{header.mqtt.qos}}\", qos: 0 }}\n"
        );
        let ferry = Ferry::start(&[("qos0.yaml", &route)]).await;
        let (publisher, _) = mqtt_client(None).await;
        // Published at QoS 1: the broker downgrades to the source's QoS 0.
        for n in 0..100u64 {
            publisher
                .publish(format!("in/{id}/a"), QoS::AtLeastOnce, false, body(n))
                .await
                .unwrap();
        }
        let mut ns = Vec::new();
        while ns.len() < 100 {
            let (topic, qos, payload) = tokio::time::timeout(Duration::from_secs(30), received.recv())
                .await
                .unwrap_or_else(|_| panic!("only {} of 100 arrived", ns.len()))
                .unwrap();
            assert_eq!(topic, format!("out/{id}/0"), "the source got it at QoS 0");
            assert_eq!(qos, QoS::AtMostOnce, "the sink published it at QoS 0");
            ns.push(n_of(&payload));
        }
        ferry.engine.shutdown().await;
        assert_each_once("QoS 0 through Ferry", ns, 0..100);
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtt_a_failed_qos0_message_is_lost_alone_and_the_next_ones_arrive() {
    within("the test to finish", DEADLINE, async {
        use rumqttc::QoS;
        if !services::available(MQTT) {
            return;
        }
        let id = unique("ferry");
        let downstream = Flaky::start(|n| n == 0, never).await;
        let route = format!(
            "from:\n  mqtt: {{ url: \"{MQTT_URL}\", topics: [\"in/{id}/+\"], qos: 0, client_id: {id}-src }}\nto:\n  - http: {{ url: \"{}\" }}\nerrors:\n  retry: {{ attempts: 1 }}\n",
            downstream.url()
        );
        let ferry = Ferry::start(&[("qos0.yaml", &route)]).await;
        let (publisher, _) = mqtt_client(None).await;
        publisher
            .publish(format!("in/{id}/a"), QoS::AtMostOnce, false, body(0))
            .await
            .unwrap();
        common::eventually("message 0 refused", Duration::from_secs(10), || {
            (downstream.refused.load(std::sync::atomic::Ordering::SeqCst) == 1).then_some(())
        })
        .await;
        // Sent right after the failure, while a source that reconnected to get
        // message 0 again (as QoS 1 does) would be away: QoS 0 is not queued
        // for an absent session, so these would be lost with it.
        for n in 1..=20u64 {
            publisher
                .publish(format!("in/{id}/a"), QoS::AtMostOnce, false, body(n))
                .await
                .unwrap();
        }
        downstream.wait_for(20, Duration::from_secs(20)).await;
        ferry.engine.shutdown().await;
        assert_each_once(
            "all but the failed one, which is not redelivered",
            downstream.accepted(),
            1..=20,
        );
    })
    .await
}

// ---------------------------------------------------------------- NATS queue groups

/// Two Ferry instances, each a route on the core `subject` (in `group`, if
/// any) to a downstream of its own; 200 messages published. Returns what each
/// downstream accepted, once both instances drained.
async fn two_instances_on(subject: &str, group: Option<&str>, total: u64) -> [Vec<u64>; 2] {
    let group = group
        .map(|g| format!(", queue_group: {g}"))
        .unwrap_or_default();
    let mut instances = Vec::new();
    for _ in 0..2 {
        let downstream = Flaky::start(never, never).await;
        let route = format!(
            "from:\n  nats: {{ url: \"{NATS_URL}\", subject: \"{subject}\"{group} }}\nto:\n  - http: {{ url: \"{}\" }}\n",
            downstream.url()
        );
        instances.push((Ferry::start(&[("qg.yaml", &route)]).await, downstream));
    }
    let c = async_nats::connect(NATS_URL)
        .await
        .expect("connect to NATS");
    for n in 0..total {
        c.publish(subject.to_string(), body(n).into())
            .await
            .unwrap();
    }
    c.flush().await.unwrap();
    services::wait_until(
        &format!("{total} distinct messages between the two"),
        Duration::from_secs(30),
        || {
            let all: BTreeSet<u64> = instances.iter().flat_map(|(_, d)| d.accepted()).collect();
            async move { (all.len() as u64 >= total).then_some(()) }
        },
    )
    .await;
    // Drained: a duplicate already on its way is delivered before this returns.
    for (ferry, _) in &instances {
        ferry.engine.shutdown().await;
    }
    [instances[0].1.accepted(), instances[1].1.accepted()]
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_instances_in_one_queue_group_share_the_messages_each_once() {
    within("the test to finish", DEADLINE, async {
        if !services::available(NATS) {
            return;
        }
        let subject = unique("ferry.qg");
        let [a, b] = two_instances_on(&subject, Some("workers"), 200).await;
        eprintln!("queue group split: {} + {}", a.len(), b.len());
        // Random spread: each gets ~100; fewer than 20 has odds below 1e-30.
        assert!(
            a.len() >= 20 && b.len() >= 20,
            "both work: {} + {}",
            a.len(),
            b.len()
        );
        let both: BTreeSet<&u64> = a.iter().filter(|n| b.contains(n)).collect();
        assert!(both.is_empty(), "handled by both instances: {both:?}");
        assert_each_once("the group as a whole", [a, b].concat(), 0..200);
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_instances_without_a_queue_group_each_get_every_message() {
    within("the test to finish", DEADLINE, async {
        if !services::available(NATS) {
            return;
        }
        let subject = unique("ferry.fanout");
        let [a, b] = two_instances_on(&subject, None, 200).await;
        assert_each_once("first instance", a, 0..200);
        assert_each_once("second instance", b, 0..200);
    })
    .await
}

// ---------------------------------------------------------------- PostgreSQL LISTEN

async fn pg_client() -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(POSTGRES_URL, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(conn);
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_notify_wakes_the_source_long_before_its_poll_interval() {
    within("the test to finish", DEADLINE, async {
        if !services::available(POSTGRES) {
            return;
        }
        let c = pg_client().await;
        let t = unique("ferry_listen");
        // The docs' setup: a trigger that NOTIFYs the source's channel on insert.
        c.batch_execute(&format!(
            "CREATE TABLE {t} (id bigserial PRIMARY KEY, n int NOT NULL, sent_at timestamptz);
             CREATE FUNCTION {t}_new() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN PERFORM pg_notify('{t}', NEW.id::text); RETURN NEW; END $$;
             CREATE TRIGGER {t}_new AFTER INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION {t}_new();
             INSERT INTO {t} (n) VALUES (0);"
        ))
        .await
        .unwrap();
        let downstream = Flaky::start(never, never).await;
        let query = format!("SELECT id, n FROM {t} WHERE sent_at IS NULL ORDER BY id");
        // A poll an hour apart: only a NOTIFY can bring rows 1 and 2 in time.
        let route = format!(
            "from:\n  postgres:\n    url: \"{POSTGRES_URL}\"\n    query: {query}\n    key: id\n    mark: UPDATE {t} SET sent_at = now() WHERE id = $1\n    listen: {t}\n    interval: 1h\nto:\n  - http: {{ url: \"{}\" }}\n",
            downstream.url()
        );
        let ferry = Ferry::start(&[("listen.yaml", &route)]).await;
        downstream.wait_for(1, Duration::from_secs(20)).await;
        for n in 1..=2u64 {
            // Wait for the source to go idle: its last statement is the poll
            // that follows the mark of row n-1, so row n cannot ride on it.
            let marked = format!("SELECT count(*) FROM {t} WHERE sent_at IS NOT NULL");
            // (Ferry wraps the query to read rows as JSON.)
            let idle = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ferry' AND state = 'idle' AND starts_with(query, 'SELECT') AND position($1 in query) > 0";
            services::wait_until(
                &format!("row {} marked and the source idle", n - 1),
                Duration::from_secs(20),
                || {
                    let (marked, query, c) = (marked.clone(), query.clone(), &c);
                    async move {
                        let m: i64 = c.query_one(&marked, &[]).await.ok()?.get(0);
                        let i: i64 = c.query_one(idle, &[&query]).await.ok()?.get(0);
                        (m == n as i64 && i == 1).then_some(())
                    }
                },
            )
            .await;
            c.execute(&format!("INSERT INTO {t} (n) VALUES ($1)"), &[&(n as i32)])
                .await
                .unwrap();
            downstream
                .wait_for(n as usize + 1, Duration::from_secs(20))
                .await;
        }
        ferry.engine.shutdown().await;
        assert_each_once("every row once", downstream.accepted(), 0..=2);
        c.batch_execute(&format!("DROP TABLE {t}; DROP FUNCTION {t}_new();"))
            .await
            .unwrap();
    })
    .await
}
