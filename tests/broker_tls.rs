//! TLS for AMQP and PostgreSQL, against servers of the test's own that speak
//! only TLS with a certificate from a throwaway CA (`common::private`), like
//! the NATS, MQTT and Redis TLS tests: with the CA in `tls.ca_file` messages
//! go through; with the system's roots or another CA the route does not
//! start, at once, with an error that names the fix.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a panic is the report; helpers are shared by `mod common`
#![cfg(all(feature = "amqp", feature = "postgres"))]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::private::{Postgres, Rabbit};
use common::services::{self, TestCa};
use common::{Ferry, Flaky, within};

/// How long one test may take in all: a hang anywhere (starting a private
/// server, the engine's start or shutdown, a broker call) fails the test
/// instead of hanging the suite, and dropping the body kills any server it
/// started.
const DEADLINE: Duration = Duration::from_secs(240);

/// Start routes on connector `private` that must not start; the one reason,
/// which must come within a few seconds (not a hang) and not leak `secret`.
async fn start_error(route: &str, connector: &str, secret: &str) -> String {
    let e = common::start_error(route, connector, Duration::from_secs(15)).await;
    assert!(!e.contains(secret), "the password leaked: {e}");
    e
}

/// The start error says what is wrong with the certificate and what to set.
fn assert_names_the_fix(tls: &str, e: &str) {
    assert!(e.contains("invalid peer certificate"), "{tls}: {e}");
    assert!(e.contains("set `tls.ca_file`"), "{tls}: {e}");
}

// ---------------------------------------------------------------- AMQP

fn amqps_url(rabbit: &Rabbit) -> String {
    format!("amqps://guest:guest@127.0.0.1:{}/%2f", rabbit.port)
}

#[tokio::test(flavor = "multi_thread")]
async fn amqp_tls_with_the_ca_file_trusted_carries_messages_both_ways() {
    within("the test to finish", DEADLINE, async {
        let Some(ca) = TestCa::generate() else { return };
        let Some(rabbit) = Rabbit::start_tls(&ca) else {
            return;
        };
        ferry::install_crypto_provider();
        let downstream = Flaky::start(|_| false, |_| false).await;
        // HTTP → AMQPS sink → queue → AMQPS source → HTTP: the node has no plain
        // listener, so both directions went over TLS.
        let connector = format!(
            "kind: amqp\nurl: {}\ntls:\n  ca_file: {}\ndeclare:\n  queues: [{{ name: tls_q }}]\n",
            amqps_url(&rabbit),
            ca.ca_cert.display()
        );
        let into =
            "from:\n  http: { path: /in }\nto:\n  - amqp: { connector: private, routing_key: tls_q }\n";
        let out = format!(
            "from:\n  amqp: {{ connector: private, queue: tls_q }}\nto:\n  - http: {{ url: \"{}\" }}\n",
            downstream.url()
        );
        let ferry = Ferry::start_with_connectors(
            &[("into.yaml", into), ("out.yaml", &out)],
            &[("private.yaml", &connector)],
        )
        .await;
        let http = common::http_client();
        for n in 0..20u64 {
            let r = http
                .post(ferry.url("/in"))
                .json(&serde_json::json!({ "n": n }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "message {n}: {:?}", r.text().await);
        }
        downstream.wait_for(20, Duration::from_secs(60)).await;
        ferry.engine.shutdown().await;
        let mut got = downstream.accepted();
        got.sort();
        assert_eq!(
            got,
            (0..20).collect::<Vec<u64>>(),
            "each once\n{}",
            rabbit.log()
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn amqp_tls_without_the_servers_ca_fails_the_start_with_a_certificate_error() {
    within("the test to finish", DEADLINE, async {
        let Some(ca) = TestCa::generate() else { return };
        let Some(rabbit) = Rabbit::start_tls(&ca) else {
            return;
        };
        let route = "from:\n  amqp: { connector: private, queue: q }\n";
        // The system's roots, then a CA that did not sign the server's certificate.
        for tls in [
            String::new(),
            format!("tls: {{ ca_file: {} }}", ca.other_ca_cert.display()),
        ] {
            let connector = format!("kind: amqp\nurl: {}\n{tls}\n", amqps_url(&rabbit));
            let e = start_error(route, &connector, "guest:guest").await;
            assert_names_the_fix(&tls, &e);
        }
    })
    .await
}

// ---------------------------------------------------------------- PostgreSQL

/// A client of the test's own, trusting `ca` (the server refuses plain text).
async fn pg_client(ca: &TestCa, port: u16) -> tokio_postgres::Client {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    ferry::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&ca.ca_cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(Arc::new(roots))
        .with_no_client_auth();
    let (client, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
        tokio_postgres_rustls::MakeRustlsConnect::new(config),
    )
    .await
    .expect("connect to the private PostgreSQL over TLS");
    tokio::spawn(conn);
    client
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_tls_with_the_ca_file_trusted_moves_rows_over_tls() {
    within("the test to finish", DEADLINE, async {
        let Some(ca) = TestCa::generate() else { return };
        let Some(pg) = Postgres::start_tls(&ca) else {
            return;
        };
        let c = pg_client(&ca, pg.port).await;
        c.batch_execute(
            "CREATE TABLE outbox (id bigserial PRIMARY KEY, n int NOT NULL, sent_at timestamptz);
             INSERT INTO outbox (n) SELECT i FROM generate_series(0, 19) AS i;
             CREATE TABLE received (n int PRIMARY KEY);",
        )
        .await
        .unwrap();
        // Source and sink both on the TLS connector.
        let connector = format!(
            "kind: postgres\nurl: postgres://postgres@127.0.0.1:{}/postgres\ntls:\n  ca_file: {}\n",
            pg.port,
            ca.ca_cert.display()
        );
        let route = "from:\n  postgres:\n    connector: private\n    query: SELECT id, n FROM outbox WHERE sent_at IS NULL ORDER BY id\n    key: id\n    mark: UPDATE outbox SET sent_at = now() WHERE id = $1\n    interval: 100ms\nto:\n  - postgres: { connector: private, table: received, columns: { n: \"{body.n}\" } }\n";
        let ferry =
            Ferry::start_with_connectors(&[("r.yaml", route)], &[("private.yaml", &connector)]).await;
        let unmarked = "SELECT count(*) FROM outbox WHERE sent_at IS NULL";
        services::wait_until("every outbox row marked", Duration::from_secs(60), || {
            let q = c.query_one(unmarked, &[]);
            async move { (q.await.ok()?.get::<_, i64>(0) == 0).then_some(()) }
        })
        .await;
        // The server's own view: Ferry's connections are encrypted (a plain one
        // could not have logged in, pg_hba.conf has only `hostssl`).
        let ferry_conns: Vec<bool> = c
            .query(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'ferry'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        ferry.engine.shutdown().await;
        assert!(
            !ferry_conns.is_empty() && ferry_conns.iter().all(|ssl| *ssl),
            "Ferry's connections and whether each uses TLS: {ferry_conns:?}"
        );
        let got: Vec<i32> = c
            .query("SELECT n FROM received ORDER BY n", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(got, (0..20).collect::<Vec<i32>>(), "{}", pg.log());
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_tls_without_the_servers_ca_fails_the_start_with_a_certificate_error() {
    within("the test to finish", DEADLINE, async {
        let Some(ca) = TestCa::generate() else { return };
        let Some(pg) = Postgres::start_tls(&ca) else {
            return;
        };
        let url = format!("postgres://postgres:hunter2@127.0.0.1:{}/postgres", pg.port);
        let route = "from:\n  postgres: { connector: private, query: SELECT 1 AS id, key: id, mark: SELECT $1::int }\n";
        // The system's roots (both spellings that turn TLS on), then a CA that
        // did not sign the server's certificate.
        for (url, tls) in [
            (url.clone(), "tls: { enabled: true }".to_string()),
            (format!("{url}?sslmode=require"), String::new()),
            (
                url.clone(),
                format!("tls: {{ ca_file: {} }}", ca.other_ca_cert.display()),
            ),
        ] {
            let connector = format!("kind: postgres\nurl: {url}\n{tls}\n");
            let e = start_error(route, &connector, "hunter2").await;
            assert_names_the_fix(&format!("{url} {tls}"), &e);
        }
    })
    .await
}
