//! NATS JetStream through Ferry, against the real server on 127.0.0.1:4222:
//! a thousand messages from one stream to another, failures nak'ed and
//! redelivered, a clear start error for a missing stream, and core subjects.
//! Credentials and TLS run against private `nats-server`s on free ports (the
//! shared one has neither): wrong ones fail the start fast and clearly, right
//! ones carry a round trip.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a panic is the report; helpers are shared by `mod common`
#![cfg(feature = "nats")]

mod common;

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use common::services::{self, NATS, NATS_URL, Private, TestCa, unique};
use common::{Ferry, Flaky};
use futures_util::StreamExt;

async fn client() -> async_nats::Client {
    async_nats::connect(NATS_URL)
        .await
        .expect("connect to NATS")
}

/// A stream capturing `NAME.>`, removed when the test is done with it.
async fn create_stream(js: &jetstream::Context, name: &str) {
    js.create_stream(stream::Config {
        name: name.to_string(),
        subjects: vec![format!("{name}.>")],
        ..Default::default()
    })
    .await
    .unwrap();
}

async fn publish_numbers(js: &jetstream::Context, subject: &str, n: usize) {
    let mut acks = Vec::new();
    for i in 0..n {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("origin", "test");
        let body = serde_json::json!({ "n": i, "pad": "x".repeat(64) }).to_string();
        acks.push(
            js.publish_with_headers(subject.to_string(), headers, body.into())
                .await
                .unwrap(),
        );
    }
    for a in acks {
        a.await.unwrap();
    }
}

/// Read `n` messages of `stream` through a fresh consumer; their `n` fields
/// and `origin` headers.
async fn read_stream(js: &jetstream::Context, name: &str, n: usize) -> Vec<(u64, String)> {
    let st = js.get_stream(name).await.unwrap();
    let consumer = st
        .create_consumer(pull::Config {
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut got = Vec::new();
    while got.len() < n {
        let m = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} messages in {name}", got.len()))
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        let origin = m
            .headers
            .as_ref()
            .and_then(|h| h.get("origin"))
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        got.push((v["n"].as_u64().unwrap(), origin));
    }
    got
}

fn connector() -> (&'static str, String) {
    ("nats.yaml", format!("kind: nats\nurl: {NATS_URL}\n"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_messages_move_between_jetstream_streams() {
    if !services::available(NATS) {
        return;
    }
    let js = jetstream::new(client().await);
    let (input, output) = (unique("FERRY_IN"), unique("FERRY_OUT"));
    create_stream(&js, &input).await;
    create_stream(&js, &output).await;
    publish_numbers(&js, &format!("{input}.orders"), 1000).await;
    let route = format!(
        "from:\n  nats: {{ connector: nats, jetstream: {{ stream: {input}, durable: ferry }} }}\nconcurrency: 16\nto:\n  - nats: {{ connector: nats, subject: \"{output}.{{body.n}}\" }}\n"
    );
    let (cname, ctext) = connector();
    let ferry = Ferry::start_with_connectors(&[("move.yaml", &route)], &[(cname, &ctext)]).await;
    let got = read_stream(&js, &output, 1000).await;
    ferry.stop().await;
    let mut ns: Vec<u64> = got.iter().map(|(n, _)| *n).collect();
    ns.sort();
    ns.dedup();
    assert_eq!(ns, (0..1000).collect::<Vec<u64>>());
    assert!(got.iter().all(|(_, o)| o == "test"), "headers travel");
    // Every input was acked: the durable consumer has nothing pending.
    let mut st = js.get_stream(&input).await.unwrap();
    let st2 = st.clone();
    services::wait_until("every input acked", Duration::from_secs(10), || {
        let st = st2.clone();
        async move {
            let mut c: jetstream::consumer::PullConsumer = st.get_consumer("ferry").await.ok()?;
            let i = c.info().await.ok()?;
            (i.num_ack_pending == 0 && i.num_pending == 0).then_some(())
        }
    })
    .await;
    let out_info = js
        .get_stream(&output)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(out_info.state.messages, 1000, "no duplicates");
    let _ = st.info().await;
    js.delete_stream(&input).await.unwrap();
    js.delete_stream(&output).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_messages_are_naked_and_redelivered() {
    if !services::available(NATS) {
        return;
    }
    let js = jetstream::new(client().await);
    let input = unique("FERRY_IN");
    create_stream(&js, &input).await;
    publish_numbers(&js, &format!("{input}.x"), 200).await;
    let downstream = Flaky::start(|n| n % 10 == 0, |_| false).await;
    let route = format!(
        "from:\n  nats: {{ connector: nats, jetstream: {{ stream: {input}, durable: ferry, nak_delay: 10ms }} }}\nto:\n  - http: {{ url: \"{}\" }}\nerrors:\n  retry: {{ attempts: 1 }}\n",
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
    js.delete_stream(&input).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_stream_stops_the_route_from_starting_with_a_clear_error() {
    if !services::available(NATS) {
        return;
    }
    let name = unique("FERRY_MISSING");
    let route = format!(
        "from:\n  nats: {{ url: \"{NATS_URL}\", jetstream: {{ stream: {name}, durable: d }} }}\n"
    );
    let failed = Ferry::try_start(&[("r.yaml", &route)], &[])
        .await
        .err()
        .expect("route must not start");
    assert!(
        failed[0]
            .1
            .contains(&format!("JetStream stream `{name}` not found")),
        "{}",
        failed[0].1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn publishing_to_a_subject_no_stream_captures_fails_the_message() {
    if !services::available(NATS) {
        return;
    }
    let subject = unique("nowhere");
    let route = format!(
        "from:\n  http: {{ path: /in }}\nto:\n  - nats: {{ url: \"{NATS_URL}\", subject: {subject}, timeout: 2s }}\nerrors:\n  retry: {{ attempts: 1 }}\n"
    );
    let ferry = Ferry::start(&[("r.yaml", &route)]).await;
    ferry::install_crypto_provider();
    let r = common::http_client()
        .post(ferry.url("/in"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "a retryable failure");
    let text = r.text().await.unwrap();
    assert!(
        text.contains("no JetStream stream captures subject"),
        "{text}"
    );
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn core_subjects_with_a_queue_group_reach_the_route() {
    if !services::available(NATS) {
        return;
    }
    let subject = unique("ferry.core");
    let downstream = Flaky::start(|_| false, |_| false).await;
    let route = format!(
        "from:\n  nats: {{ url: \"{NATS_URL}\", subject: \"{subject}.*\", queue_group: ferry }}\nto:\n  - http: {{ url: \"{}\" }}\n",
        downstream.url()
    );
    let ferry = Ferry::start(&[("core.yaml", &route)]).await;
    let c = client().await;
    for i in 0..50u64 {
        c.publish(
            format!("{subject}.a"),
            serde_json::json!({ "n": i }).to_string().into(),
        )
        .await
        .unwrap();
    }
    c.flush().await.unwrap();
    let got = downstream.wait_for(50, Duration::from_secs(30)).await;
    ferry.stop().await;
    assert_eq!(got.len(), 50);
}

/// A private `nats-server` with JetStream, plus `extra` arguments (auth, TLS).
fn private_nats(extra: &[&str]) -> Option<Private> {
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    Private::start("nats-server", move |port, dir| {
        let mut args: Vec<String> = ["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"]
            .map(String::from)
            .to_vec();
        args.push(dir.display().to_string());
        args.extend(extra);
        args
    })
}

/// Twenty messages from stream IN through Ferry to stream OUT, on a private
/// server that `client` may use, with Ferry connecting through `connector`.
async fn round_trip_through(client: async_nats::Client, connector: &str) {
    let js = jetstream::new(client);
    create_stream(&js, "IN").await;
    create_stream(&js, "OUT").await;
    publish_numbers(&js, "IN.x", 20).await;
    let route = "from:\n  nats: { connector: private, jetstream: { stream: IN, durable: ferry } }\nto:\n  - nats: { connector: private, subject: OUT.x }\n";
    let ferry =
        Ferry::start_with_connectors(&[("r.yaml", route)], &[("private.yaml", connector)]).await;
    let got = read_stream(&js, "OUT", 20).await;
    ferry.stop().await;
    let mut ns: Vec<u64> = got.iter().map(|(n, _)| *n).collect();
    ns.sort();
    ns.dedup();
    assert_eq!(ns, (0..20).collect::<Vec<u64>>());
}

/// Start a route on `connector` that must not start; its error, which must
/// come within a few seconds (not a hang).
async fn start_error(connector: &str) -> String {
    let route = "from:\n  nats: { connector: private, subject: in.x }\n";
    common::start_error(route, connector, Duration::from_secs(10)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_fails_the_start_with_an_authorization_violation() {
    common::within(
        "the test against a private nats-server",
        Duration::from_secs(120),
        a_wrong_password_fails_the_start_with_an_authorization_violation_steps(),
    )
    .await
}

async fn a_wrong_password_fails_the_start_with_an_authorization_violation_steps() {
    let Some(server) = private_nats(&["--user", "ferry", "--pass", "right-secret"]) else {
        return;
    };
    let e = start_error(&format!(
        "kind: nats\nurl: nats://127.0.0.1:{}\nuser: ferry\npassword: hunter2\n",
        server.port
    ))
    .await;
    assert!(e.contains("authorization violation"), "{e}");
    assert!(e.contains("check user/password"), "{e}");
    assert!(!e.contains("hunter2"), "the password leaked: {e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_token_fails_the_start_with_an_authorization_violation() {
    common::within(
        "the test against a private nats-server",
        Duration::from_secs(120),
        a_wrong_token_fails_the_start_with_an_authorization_violation_steps(),
    )
    .await
}

async fn a_wrong_token_fails_the_start_with_an_authorization_violation_steps() {
    let Some(server) = private_nats(&["--auth", "right-token"]) else {
        return;
    };
    let e = start_error(&format!(
        "kind: nats\nurl: nats://127.0.0.1:{}\ntoken: hunter2\n",
        server.port
    ))
    .await;
    assert!(e.contains("authorization violation"), "{e}");
    assert!(!e.contains("hunter2"), "the token leaked: {e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_right_password_carries_a_round_trip() {
    common::within(
        "the test against a private nats-server",
        Duration::from_secs(120),
        the_right_password_carries_a_round_trip_steps(),
    )
    .await
}

async fn the_right_password_carries_a_round_trip_steps() {
    let Some(server) = private_nats(&["--user", "ferry", "--pass", "right-secret"]) else {
        return;
    };
    let url = format!("nats://127.0.0.1:{}", server.port);
    let client =
        async_nats::ConnectOptions::with_user_and_password("ferry".into(), "right-secret".into())
            .connect(url.as_str())
            .await
            .unwrap();
    round_trip_through(
        client,
        &format!("kind: nats\nurl: {url}\nuser: ferry\npassword: right-secret\n"),
    )
    .await;
}

/// A private server that speaks only TLS, with a certificate from `ca`.
fn private_tls_nats(ca: &TestCa) -> Option<Private> {
    private_nats(&[
        "--tls",
        "--tlscert",
        &ca.server_cert.display().to_string(),
        "--tlskey",
        &ca.server_key.display().to_string(),
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_the_ca_file_trusted_carries_a_round_trip() {
    common::within(
        "the test against a private nats-server",
        Duration::from_secs(120),
        tls_with_the_ca_file_trusted_carries_a_round_trip_steps(),
    )
    .await
}

async fn tls_with_the_ca_file_trusted_carries_a_round_trip_steps() {
    let Some(ca) = TestCa::generate() else { return };
    let Some(server) = private_tls_nats(&ca) else {
        return;
    };
    ferry::install_crypto_provider();
    let url = format!("tls://127.0.0.1:{}", server.port);
    let client = async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(ca.ca_cert.clone())
        .connect(url.as_str())
        .await
        .unwrap();
    round_trip_through(
        client,
        &format!(
            "kind: nats\nurl: {url}\ntls:\n  ca_file: {}\n",
            ca.ca_cert.display()
        ),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_without_the_servers_ca_fails_the_start_with_a_certificate_error() {
    common::within(
        "the test against a private nats-server",
        Duration::from_secs(120),
        tls_without_the_servers_ca_fails_the_start_with_a_certificate_error_steps(),
    )
    .await
}

async fn tls_without_the_servers_ca_fails_the_start_with_a_certificate_error_steps() {
    let Some(ca) = TestCa::generate() else { return };
    let Some(server) = private_tls_nats(&ca) else {
        return;
    };
    let url = format!("tls://127.0.0.1:{}", server.port);
    // The system's roots, then a CA that did not sign the server's certificate.
    for tls in [
        "tls: { enabled: true }".to_string(),
        format!("tls: {{ ca_file: {} }}", ca.other_ca_cert.display()),
    ] {
        let e = start_error(&format!("kind: nats\nurl: {url}\n{tls}\n")).await;
        assert!(e.contains("invalid peer certificate"), "{tls}: {e}");
        assert!(e.contains("set `tls.ca_file`"), "{tls}: {e}");
    }
}
