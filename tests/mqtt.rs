//! MQTT through Ferry, against the real Mosquitto on 127.0.0.1:1883: a
//! thousand QoS 1 messages from one topic to another, failed messages
//! redelivered through the persistent session, and a fast, clear error for an
//! unreachable broker.
#![cfg(feature = "mqtt")]

mod common;

use std::time::Duration;

use common::services::{self, MQTT, MQTT_URL, unique};
use common::{Ferry, Flaky};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

/// A plain client: its handle, and the payloads of what it receives.
async fn plain_client(subscribe: Option<&str>) -> (AsyncClient, mpsc::UnboundedReceiver<Vec<u8>>) {
    let mut o = MqttOptions::new(unique("test"), "127.0.0.1", 1883);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(o, 1024);
    let (tx, rx) = mpsc::unbounded_channel();
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let mut subscribed_tx = Some(subscribed_tx);
    if let Some(t) = subscribe {
        client.subscribe(t, QoS::AtLeastOnce).await.unwrap();
    } else if let Some(s) = subscribed_tx.take() {
        let _ = s.send(());
    }
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send(p.payload.to_vec());
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
    subscribed_rx.await.unwrap();
    (client, rx)
}

fn body(i: u64) -> Vec<u8> {
    serde_json::json!({ "n": i, "pad": "x".repeat(64) })
        .to_string()
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_qos1_messages_move_between_topics() {
    if !services::available(MQTT) {
        return;
    }
    let id = unique("ferry");
    let (_sub, mut received) = plain_client(Some(&format!("out/{id}/#"))).await;
    let route = format!(
        "from:\n  mqtt: {{ url: \"{MQTT_URL}\", topics: [\"in/{id}/+\"], client_id: {id}-src }}\nconcurrency: 16\nto:\n  - mqtt: {{ url: \"{MQTT_URL}\", topic: \"out/{id}/{{body.n}}\" }}\n"
    );
    let ferry = Ferry::start(&[("move.yaml", &route)]).await;
    let (publisher, _) = plain_client(None).await;
    for i in 0..1000u64 {
        publisher
            .publish(format!("in/{id}/a"), QoS::AtLeastOnce, false, body(i))
            .await
            .unwrap();
    }
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 1000 {
        let p = tokio::time::timeout(Duration::from_secs(60), received.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of 1000 arrived", seen.len()))
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        seen.insert(v["n"].as_u64().unwrap());
    }
    ferry.engine.shutdown().await;
    assert_eq!(seen.len(), 1000);
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_messages_come_back_through_the_persistent_session() {
    if !services::available(MQTT) {
        return;
    }
    let id = unique("ferry");
    let downstream = Flaky::start(|n| n % 10 == 0, |_| false).await;
    let route = format!(
        "from:\n  mqtt: {{ url: \"{MQTT_URL}\", topics: [\"in/{id}/#\"], client_id: {id}-src, retry_delay: 50ms }}\nto:\n  - http: {{ url: \"{}\" }}\nerrors:\n  retry: {{ attempts: 1 }}\n",
        downstream.url()
    );
    let ferry = Ferry::start(&[("flaky.yaml", &route)]).await;
    let (publisher, _) = plain_client(None).await;
    for i in 0..200u64 {
        publisher
            .publish(format!("in/{id}/x"), QoS::AtLeastOnce, false, body(i))
            .await
            .unwrap();
    }
    let got = downstream.wait_for(200, Duration::from_secs(60)).await;
    ferry.engine.shutdown().await;
    assert_eq!(got, (0..200).collect::<Vec<u64>>(), "none lost");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_broker_fails_the_route_start_fast() {
    let port = common::closed_port();
    let route = format!("from:\n  mqtt: {{ url: \"mqtt://127.0.0.1:{port}\", topics: [a/b] }}\n");
    let started = std::time::Instant::now();
    let failed = Ferry::try_start(&[("r.yaml", &route)], &[])
        .await
        .err()
        .expect("route must not start");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(
        failed[0].1.contains("cannot connect to mqtt"),
        "{}",
        failed[0].1
    );
}
