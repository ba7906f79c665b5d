//! MQTT through Ferry, against the real Mosquitto on 127.0.0.1:1883: a
//! thousand QoS 1 messages from one topic to another, failed messages
//! redelivered through the persistent session, and a fast, clear error for an
//! unreachable broker. Passwords and TLS run against private `mosquitto`s on
//! free ports (the shared one has neither): wrong settings fail the start
//! fast and clearly, right ones carry a round trip.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a panic is the report; helpers are shared by `mod common`
#![cfg(feature = "mqtt")]

mod common;

use std::path::Path;
use std::time::Duration;

use common::services::{self, MQTT, MQTT_URL, Private, TestCa, unique};
use common::{Ferry, Flaky};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

/// A plain client: its handle, and the payloads of what it receives.
async fn plain_client(subscribe: Option<&str>) -> (AsyncClient, mpsc::UnboundedReceiver<Vec<u8>>) {
    client_with(
        MqttOptions::new(unique("test"), "127.0.0.1", 1883),
        subscribe,
    )
    .await
}

/// A client with options of the caller's (broker, credentials, TLS).
async fn client_with(
    mut o: MqttOptions,
    subscribe: Option<&str>,
) -> (AsyncClient, mpsc::UnboundedReceiver<Vec<u8>>) {
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
    tokio::time::timeout(Duration::from_secs(30), subscribed_rx)
        .await
        .expect("no SubAck from the broker within 30 s")
        .expect("the MQTT event loop ended before the SubAck");
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
        seen.insert(common::n_of(&p));
    }
    ferry.stop().await;
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
    ferry.stop().await;
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

/// A private `mosquitto` on a free port: `listener` lines are the listener's
/// own settings. `user root` keeps it from switching to the `mosquitto` user
/// when run as root, which could not read our 0700 temp folders.
fn private_mosquitto(listener: impl FnOnce(&Path) -> String) -> Option<Private> {
    Private::start("mosquitto", |port, dir| {
        let conf = dir.join("mosquitto.conf");
        let text = format!(
            "user root\nlog_dest stderr\nper_listener_settings true\nlistener {port} 127.0.0.1\n{}\n",
            listener(dir)
        );
        std::fs::write(&conf, text).unwrap();
        vec!["-c".into(), conf.display().to_string()]
    })
}

/// A broker that admits only `ferry` with password `right-secret`.
fn mosquitto_with_password() -> Option<Private> {
    if !services::installed("mosquitto_passwd") {
        return None;
    }
    private_mosquitto(|dir| {
        let file = dir.join("passwords");
        let out = common::output_within(
            std::process::Command::new("mosquitto_passwd").args([
                "-c",
                "-b",
                &file.display().to_string(),
                "ferry",
                "right-secret",
            ]),
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "mosquitto_passwd: {out:?}");
        format!("allow_anonymous false\npassword_file {}", file.display())
    })
}

/// Twenty messages from `in/x` through Ferry to `out/N` on a private broker,
/// with Ferry connecting through `connector` and test clients built by `opts`.
async fn round_trip_through(opts: impl Fn() -> MqttOptions, connector: &str) {
    let (_sub, mut received) = client_with(opts(), Some("out/#")).await;
    let route = "from:\n  mqtt: { connector: private, topics: [\"in/#\"] }\nto:\n  - mqtt: { connector: private, topic: \"out/{body.n}\" }\n";
    let ferry =
        Ferry::start_with_connectors(&[("r.yaml", route)], &[("private.yaml", connector)]).await;
    let (publisher, _) = client_with(opts(), None).await;
    for i in 0..20u64 {
        publisher
            .publish("in/x", QoS::AtLeastOnce, false, body(i))
            .await
            .unwrap();
    }
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 20 {
        let p = tokio::time::timeout(Duration::from_secs(30), received.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of 20 arrived", seen.len()))
            .unwrap();
        seen.insert(common::n_of(&p));
    }
    ferry.stop().await;
    assert_eq!(seen, (0..20).collect());
}

/// Start a route on `connector` that must not start; its error, which must
/// come within a few seconds (not a hang).
async fn start_error(connector: &str) -> String {
    let route = "from:\n  mqtt: { connector: private, topics: [a/b] }\n";
    common::start_error(route, connector, Duration::from_secs(10)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_fails_the_start_with_a_clear_error() {
    common::within(
        "the test against a private mosquitto",
        Duration::from_secs(120),
        a_wrong_password_fails_the_start_with_a_clear_error_steps(),
    )
    .await
}

async fn a_wrong_password_fails_the_start_with_a_clear_error_steps() {
    let Some(server) = mosquitto_with_password() else {
        return;
    };
    let url = format!("mqtt://127.0.0.1:{}", server.port);
    for who in [
        "username: ferry\npassword: hunter2",
        "username: nobody\npassword: hunter2",
    ] {
        let e = start_error(&format!("kind: mqtt\nurl: {url}\n{who}\n")).await;
        assert!(e.contains("check username and password"), "{who}: {e}");
        assert!(!e.contains("hunter2"), "the password leaked: {e}");
    }
    // No credentials at all, where the broker wants them.
    let e = start_error(&format!("kind: mqtt\nurl: {url}\n")).await;
    assert!(e.contains("check username and password"), "anonymous: {e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_right_password_carries_a_round_trip() {
    common::within(
        "the test against a private mosquitto",
        Duration::from_secs(120),
        the_right_password_carries_a_round_trip_steps(),
    )
    .await
}

async fn the_right_password_carries_a_round_trip_steps() {
    let Some(server) = mosquitto_with_password() else {
        return;
    };
    let port = server.port;
    round_trip_through(
        || {
            let mut o = MqttOptions::new(unique("test"), "127.0.0.1", port);
            o.set_credentials("ferry", "right-secret");
            o
        },
        &format!(
            "kind: mqtt\nurl: mqtt://127.0.0.1:{port}\nusername: ferry\npassword: right-secret\n"
        ),
    )
    .await;
}

/// A private broker whose only listener speaks TLS, with `ca`'s certificate.
fn private_tls_mosquitto(ca: &TestCa) -> Option<Private> {
    private_mosquitto(|_| {
        format!(
            "allow_anonymous true\ncertfile {}\nkeyfile {}",
            ca.server_cert.display(),
            ca.server_key.display()
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_the_ca_file_trusted_carries_a_round_trip() {
    common::within(
        "the test against a private mosquitto",
        Duration::from_secs(120),
        tls_with_the_ca_file_trusted_carries_a_round_trip_steps(),
    )
    .await
}

async fn tls_with_the_ca_file_trusted_carries_a_round_trip_steps() {
    let Some(ca) = TestCa::generate() else { return };
    let Some(server) = private_tls_mosquitto(&ca) else {
        return;
    };
    ferry::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject;
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(&ca.ca_cert).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = std::sync::Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let port = server.port;
    round_trip_through(
        || {
            let mut o = MqttOptions::new(unique("test"), "127.0.0.1", port);
            o.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls.clone()),
            ));
            o
        },
        &format!(
            "kind: mqtt\nurl: mqtts://127.0.0.1:{port}\ntls:\n  ca_file: {}\n",
            ca.ca_cert.display()
        ),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_without_the_servers_ca_fails_the_start_with_a_certificate_error() {
    common::within(
        "the test against a private mosquitto",
        Duration::from_secs(120),
        tls_without_the_servers_ca_fails_the_start_with_a_certificate_error_steps(),
    )
    .await
}

async fn tls_without_the_servers_ca_fails_the_start_with_a_certificate_error_steps() {
    let Some(ca) = TestCa::generate() else { return };
    let Some(server) = private_tls_mosquitto(&ca) else {
        return;
    };
    let url = format!("mqtts://127.0.0.1:{}", server.port);
    // The system's roots, then a CA that did not sign the server's certificate.
    for tls in [
        String::new(),
        format!("tls: {{ ca_file: {} }}", ca.other_ca_cert.display()),
    ] {
        let e = start_error(&format!("kind: mqtt\nurl: {url}\n{tls}\n")).await;
        assert!(e.contains("invalid peer certificate"), "{tls}: {e}");
        assert!(e.contains("set `tls.ca_file`"), "{tls}: {e}");
    }
}
