//! PostgreSQL through Ferry, against the real server on 127.0.0.1:5432: a
//! thousand rows from an outbox table into another table (upserted), failed
//! rows retried, and clear start errors for a missing table or user.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a panic is the report; helpers are shared by `mod common`
#![cfg(feature = "postgres")]

mod common;

use std::time::Duration;

use common::services::{self, POSTGRES, POSTGRES_URL, unique};
use common::{Ferry, Flaky};

async fn client() -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(POSTGRES_URL, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(conn);
    c
}

/// An outbox table `name` with `n` rows.
async fn outbox(c: &tokio_postgres::Client, name: &str, n: i32) {
    c.batch_execute(&format!(
        "CREATE TABLE {name} (id bigserial PRIMARY KEY, payload jsonb NOT NULL, sent_at timestamptz);
         INSERT INTO {name} (payload) SELECT jsonb_build_object('n', i, 'pad', repeat('x', 64)) FROM generate_series(0, {}) AS i;",
        n - 1
    ))
    .await
    .unwrap();
}

async fn count(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

fn connector() -> (&'static str, String) {
    ("db.yaml", format!("kind: postgres\nurl: {POSTGRES_URL}\n"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_rows_move_from_an_outbox_into_a_table() {
    if !services::available(POSTGRES) {
        return;
    }
    let c = client().await;
    let (src, dst) = (unique("ferry_outbox"), unique("ferry_orders"));
    outbox(&c, &src, 1000).await;
    c.batch_execute(&format!(
        "CREATE TABLE {dst} (id bigint PRIMARY KEY, n int NOT NULL, payload jsonb, route text)"
    ))
    .await
    .unwrap();
    let route = format!(
        r#"from:
  postgres:
    connector: db
    query: SELECT id, payload FROM {src} WHERE sent_at IS NULL ORDER BY id LIMIT 200
    key: id
    mark: UPDATE {src} SET sent_at = now() WHERE id = $1
    listen: {src}
concurrency: 16
to:
  - postgres:
      connector: db
      table: {dst}
      columns: {{ id: "{{body.id}}", n: "{{body.payload.n}}", payload: "{{body.payload}}", route: "{{route}}" }}
      conflict_key: [id]
"#
    );
    let (cname, ctext) = connector();
    let ferry = Ferry::start_with_connectors(&[("outbox.yaml", &route)], &[(cname, &ctext)]).await;
    let check = format!("SELECT count(*) FROM {dst}");
    let c2 = client().await;
    services::wait_until("1000 rows", Duration::from_secs(60), || {
        let q = c2.query_one(check.as_str(), &[]);
        async move {
            let n: i64 = q.await.ok()?.get(0);
            (n >= 1000).then_some(())
        }
    })
    .await;
    ferry.stop().await;
    assert_eq!(
        count(&c, &format!("SELECT count(*) FROM {dst}")).await,
        1000
    );
    assert_eq!(
        count(&c, &format!("SELECT count(*) FROM {dst} d JOIN {src} s ON s.id = d.id WHERE d.n = (s.payload->>'n')::int AND d.payload = s.payload AND d.route = 'outbox'")).await,
        1000,
        "content matches, typed columns converted"
    );
    assert_eq!(
        count(
            &c,
            &format!("SELECT count(*) FROM {src} WHERE sent_at IS NULL")
        )
        .await,
        0,
        "every row marked"
    );
    c.batch_execute(&format!("DROP TABLE {src}; DROP TABLE {dst};"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_rows_are_not_marked_and_are_retried() {
    if !services::available(POSTGRES) {
        return;
    }
    let c = client().await;
    let src = unique("ferry_outbox");
    outbox(&c, &src, 200).await;
    let downstream = Flaky::start(|n| n % 10 == 0, |_| false).await;
    let route = format!(
        "from:\n  postgres: {{ connector: db, query: \"SELECT id, payload->'n' AS n FROM {src} WHERE sent_at IS NULL ORDER BY id\", key: id, mark: \"UPDATE {src} SET sent_at = now() WHERE id = $1\", retry_delay: 100ms, interval: 200ms }}\nto:\n  - http: {{ url: \"{}\" }}\nerrors:\n  retry: {{ attempts: 1 }}\n",
        downstream.url()
    );
    let (cname, ctext) = connector();
    let ferry = Ferry::start_with_connectors(&[("flaky.yaml", &route)], &[(cname, &ctext)]).await;
    let got = downstream.wait_for(200, Duration::from_secs(60)).await;
    ferry.stop().await;
    assert_eq!(got, (0..200).collect::<Vec<u64>>());
    assert_eq!(
        count(
            &c,
            &format!("SELECT count(*) FROM {src} WHERE sent_at IS NULL")
        )
        .await,
        0
    );
    c.batch_execute(&format!("DROP TABLE {src}")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_table_stops_the_route_from_starting_with_a_clear_error() {
    if !services::available(POSTGRES) {
        return;
    }
    let table = unique("ferry_missing");
    let route = format!(
        "from:\n  http: {{ path: /in }}\nto:\n  - postgres: {{ url: \"{POSTGRES_URL}\", table: {table}, columns: {{ a: \"{{id}}\" }} }}\n"
    );
    let failed = Ferry::try_start(&[("r.yaml", &route)], &[])
        .await
        .err()
        .expect("route must not start");
    assert!(
        failed[0].1.contains(&format!("table `{table}`")),
        "{}",
        failed[0].1
    );
    assert!(failed[0].1.contains("does not exist"), "{}", failed[0].1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_user_stops_the_route_from_starting_with_a_clear_error() {
    if !services::available(POSTGRES) {
        return;
    }
    let route = "from:\n  postgres: { connector: db, query: SELECT 1 AS id, key: id, mark: SELECT $1::int }\n";
    let conn = "kind: postgres\nurl: postgres://no_such_user:secret-pw@127.0.0.1:5432/test\n";
    let failed = Ferry::try_start(&[("r.yaml", route)], &[("db.yaml", conn)])
        .await
        .err()
        .expect("route must not start");
    let reason = &failed[0].1;
    assert!(reason.contains("cannot connect to postgres"), "{reason}");
    assert!(!reason.contains("secret-pw"), "password leaked: {reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn jsonpath_column_mappings_upsert_rows_from_an_http_body() {
    if !services::available(POSTGRES) {
        return;
    }
    let c = client().await;
    let table = unique("ferry_orders");
    c.batch_execute(&format!(
        "CREATE TABLE {table} (id text PRIMARY KEY, total numeric NOT NULL, lines jsonb)"
    ))
    .await
    .unwrap();
    let route = format!(
        "from:\n  http: {{ path: /orders }}\nsteps:\n  - xml_to_json: {{ infer_types: true, arrays: [\"$.order.line\"] }}\nto:\n  - postgres: {{ connector: db, table: {table}, conflict_key: [id], columns: {{ id: \"$.order['@id']\", total: \"$.order.total\", lines: \"$.order.line\" }} }}\n"
    );
    let (name, conn) = connector();
    let f = Ferry::start_with_connectors(&[("r.yaml", &route)], &[(name, &conn)]).await;
    let http = common::http_client();
    for total in ["10.50", "12.25"] {
        let r = http
            .post(f.url("/orders"))
            .body(format!(
                "<order id=\"A-1\"><line sku=\"X\"/><line sku=\"Y\"/><total>{total}</total></order>"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    // The second post updated the same row (upsert on id).
    let row = c
        .query_one(
            &format!("SELECT total::text, jsonb_array_length(lines) FROM {table} WHERE id = 'A-1'"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "12.25");
    assert_eq!(row.get::<_, i32>(1), 2);
    assert_eq!(count(&c, &format!("SELECT count(*) FROM {table}")).await, 1);
    f.stop().await;
}
