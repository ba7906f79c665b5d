//! Redis through Ferry, against the real server on 127.0.0.1:6379: a thousand
//! stream entries from one stream to another, failed entries claimed and
//! retried, the list reliable queue, and a clear error for bad credentials.
//! TLS runs against a private `redis-server --tls-port` with a throwaway CA.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a panic is the report; helpers are shared by `mod common`
#![cfg(feature = "redis")]

mod common;

use std::time::Duration;

use common::services::{self, Private, REDIS, REDIS_URL, TestCa, unique};
use common::{Ferry, Flaky};
use redis::AsyncCommands;

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
    let mut c = services::redis_con().await;
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
    ferry.stop().await;
    let entries: redis::streams::StreamRangeReply = c2.xrange_all(&output).await.unwrap();
    let mut ns: Vec<u64> = Vec::new();
    for e in &entries.ids {
        let b: String = e.get("body").unwrap();
        ns.push(common::n_of(&b));
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
    let mut c = services::redis_con().await;
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
    ferry.stop().await;
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
    let mut c = services::redis_con().await;
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
    ferry.stop().await;
    assert_eq!(got, (0..100).collect::<Vec<u64>>());
    let left: usize = c.llen(&input).await.unwrap();
    let processing: usize = c.llen(format!("{input}:processing:c1")).await.unwrap();
    assert_eq!((left, processing), (0, 0));
    // The list sink got every message (at least once: a message whose HTTP
    // delivery failed is sent to both sinks again).
    let written: Vec<String> = c.lrange(&output, 0, -1).await.unwrap();
    let written: std::collections::BTreeSet<u64> = written.iter().map(common::n_of).collect();
    assert_eq!(written, (0..100).collect(), "the list sink lost messages");
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

/// A private Redis that speaks only TLS, with a certificate from `ca`.
fn private_tls_redis(ca: &TestCa) -> Option<Private> {
    Private::start("redis-server", |port, dir| {
        [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            &ca.server_cert.display().to_string(),
            "--tls-key-file",
            &ca.server_key.display().to_string(),
            "--tls-ca-cert-file",
            &ca.ca_cert.display().to_string(),
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--dir",
            &dir.display().to_string(),
        ]
        .map(String::from)
        .to_vec()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_the_ca_file_trusted_carries_a_round_trip() {
    common::within(
        "the test against a private redis-server",
        Duration::from_secs(120),
        tls_with_the_ca_file_trusted_carries_a_round_trip_steps(),
    )
    .await
}

async fn tls_with_the_ca_file_trusted_carries_a_round_trip_steps() {
    let Some(ca) = TestCa::generate() else { return };
    let Some(server) = private_tls_redis(&ca) else {
        return;
    };
    ferry::install_crypto_provider();
    let url = format!("rediss://127.0.0.1:{}/0", server.port);
    let client = redis::Client::build_with_tls(
        url.as_str(),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(std::fs::read(&ca.ca_cert).unwrap()),
        },
    )
    .unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    for i in 0..20u64 {
        let _: String = c.xadd("in", "*", &[("body", body(i))]).await.unwrap();
    }
    // Both spellings mean TLS: `rediss://`, or `redis://` with TLS settings.
    let plain_scheme = format!("redis://127.0.0.1:{}/0", server.port);
    for (i, (conn_url, enabled)) in [(&url, ""), (&plain_scheme, "\n  enabled: true")]
        .into_iter()
        .enumerate()
    {
        let connector = format!(
            "kind: redis\nurl: {conn_url}\ntls:\n  ca_file: {}{enabled}\n",
            ca.ca_cert.display()
        );
        let route = format!(
            "from:\n  redis: {{ connector: private, stream: in, group: g{i} }}\nto:\n  - redis: {{ connector: private, stream: out{i} }}\n"
        );
        let ferry =
            Ferry::start_with_connectors(&[("r.yaml", &route)], &[("private.yaml", &connector)])
                .await;
        let out = format!("out{i}");
        let n = services::wait_until(
            "20 entries in the output stream",
            Duration::from_secs(30),
            || {
                let (mut c, out) = (c.clone(), out.clone());
                async move {
                    let n: usize = c.xlen(&out).await.ok()?;
                    (n >= 20).then_some(n)
                }
            },
        )
        .await;
        ferry.stop().await;
        assert_eq!(n, 20, "{conn_url}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_without_the_servers_ca_fails_the_start_with_a_certificate_error() {
    common::within(
        "the test against a private redis-server",
        Duration::from_secs(120),
        tls_without_the_servers_ca_fails_the_start_with_a_certificate_error_steps(),
    )
    .await
}

async fn tls_without_the_servers_ca_fails_the_start_with_a_certificate_error_steps() {
    let Some(ca) = TestCa::generate() else { return };
    let Some(server) = private_tls_redis(&ca) else {
        return;
    };
    let url = format!("rediss://127.0.0.1:{}/0", server.port);
    // The system's roots, then a CA that did not sign the server's certificate.
    for tls in [
        String::new(),
        format!("tls: {{ ca_file: {} }}", ca.other_ca_cert.display()),
    ] {
        let route = "from:\n  redis: { connector: private, stream: in }\n";
        let connector = format!("kind: redis\nurl: {url}\n{tls}\n");
        let e = common::start_error(route, &connector, Duration::from_secs(10)).await;
        assert!(e.contains("invalid peer certificate"), "{tls}: {e}");
        assert!(e.contains("set `tls.ca_file`"), "{tls}: {e}");
    }
}
