//! End-to-end: real HTTP requests into routes running in-process, real files
//! and a real downstream HTTP server out.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a panic is the report; helpers are shared by `mod common`

mod common;

use std::time::{Duration, Instant};

use common::{Downstream, Ferry, closed_port, file_names_in, files_in, http_client};
use serde_json::Value;

const ORDERS_ROUTE: &str = r#"
from:
  http: { path: /orders }
steps:
  - xml_to_json: { arrays: ["$.order.line"], infer_types: true }
  - filter: "body.order.total >= 10.0"
  - script: |
      body.order.priority = if body.order.total > 1000 { "high" } else { "normal" };
  - set_header: { name: order-id, jsonpath: "$.order['@id']" }
to:
  - file: { path: "{dir}/out", name: "order-{header.order-id}.json" }
"#;

const BIG_ORDER: &str = r#"<?xml version="1.0"?>
<order id="A-17"><customer>ACME &amp; Sons</customer><line sku="X1" qty="3"/><total>1250.50</total></order>"#;

#[tokio::test]
async fn xml_post_becomes_filtered_enriched_json_in_a_file() {
    let f = Ferry::start(&[("orders.yaml", ORDERS_ROUTE)]).await;
    let resp = http_client()
        .post(f.url("/orders"))
        .header("content-type", "application/xml")
        .body(BIG_ORDER)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert!(resp.headers().contains_key("ferry-message-id"));
    let reply: Value = resp.json().await.unwrap();
    assert_eq!(reply["order"]["priority"], "high");
    assert_eq!(reply["order"]["customer"], "ACME & Sons");
    assert_eq!(reply["order"]["total"], 1250.5);
    // One <line> still became an array because of `arrays:`.
    assert_eq!(reply["order"]["line"][0]["@sku"], "X1");

    // The reply came after delivery: the file is already there.
    let written = f.path("out/order-A-17.json");
    let on_disk: Value = serde_json::from_slice(&std::fs::read(&written).unwrap()).unwrap();
    assert_eq!(on_disk, reply);
    f.stop().await;
}

#[tokio::test]
async fn filtered_message_is_acked_not_delivered() {
    let f = Ferry::start(&[("orders.yaml", ORDERS_ROUTE)]).await;
    let resp = f
        .post("/orders", r#"<order id="small"><total>3</total></order>"#)
        .await;
    assert_eq!(resp.status(), 204);
    assert!(
        resp.headers()["ferry-dropped"]
            .to_str()
            .unwrap()
            .contains("filter")
    );
    // Only the order that passes the filter lands in the folder, so a wrong
    // folder cannot pass for "nothing written".
    assert_eq!(f.post("/orders", BIG_ORDER).await.status(), 200);
    assert_eq!(file_names_in(&f.path("out")), ["order-A-17.json"]);
    f.stop().await;
}

#[tokio::test]
async fn bad_input_gets_400_with_the_reason_and_the_route_keeps_running() {
    let f = Ferry::start(&[("orders.yaml", ORDERS_ROUTE)]).await;
    let malformed = f
        .post("/orders", "<order id=\"1\"><total>5</total></ordr>")
        .await;
    assert_eq!(malformed.status(), 400);
    let err: Value = malformed.json().await.unwrap();
    assert!(
        err["error"].as_str().unwrap().contains("xml_to_json"),
        "{err}"
    );
    assert_eq!(err["stage"], "step 1 (xml_to_json)");

    let not_utf8 = f.post("/orders", b"<order>\xff\xfe</order>".to_vec()).await;
    assert_eq!(not_utf8.status(), 400);

    let ok = f.post("/orders", BIG_ORDER).await;
    assert_eq!(ok.status(), 200);
    f.stop().await;
}

#[tokio::test]
async fn body_over_the_limit_gets_413() {
    let route = r#"
from:
  http: { path: /small, max_body: 1KiB }
to:
  - file: { path: "{dir}/out" }
"#;
    let f = Ferry::start(&[("small.yaml", route)]).await;
    let resp = f.post("/small", vec![b'x'; 2048]).await;
    assert_eq!(resp.status(), 413);
    // A chunked body (no Content-Length) is cut off at the limit too.
    let chunks =
        futures_util::stream::iter((0..4).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 512])));
    let resp = f.post("/small", reqwest::Body::wrap_stream(chunks)).await;
    assert_eq!(resp.status(), 413);
    // A body within the limit is written, and it is the only file there.
    assert_eq!(f.post("/small", "within").await.status(), 200);
    let files = files_in(&f.path("out"));
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(std::fs::read_to_string(&files[0]).unwrap(), "within");
    f.stop().await;
}

#[tokio::test]
async fn unknown_path_is_404_and_wrong_method_is_405() {
    let f = Ferry::start(&[("orders.yaml", ORDERS_ROUTE)]).await;
    let r = http_client().post(f.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = http_client().get(f.url("/orders")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    f.stop().await;
}

#[tokio::test]
async fn runaway_script_stops_at_the_operation_limit_and_the_route_keeps_running() {
    let route = r#"
from:
  http: { path: /loop }
script_limits: { max_operations: 100000 }
steps:
  - script: |
      if body.spin == true {
        loop { }
      }
to:
  - file: { path: "{dir}/out" }
"#;
    let f = Ferry::start(&[("loop.yaml", route)]).await;
    let started = Instant::now();
    let resp = f.post("/loop", r#"{"spin": true}"#).await;
    assert_eq!(resp.status(), 500);
    let err: Value = resp.json().await.unwrap();
    let text = err["error"].as_str().unwrap();
    assert!(text.contains("script failed at script line"), "{text}");
    assert!(text.to_lowercase().contains("operations"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let ok = f.post("/loop", r#"{"spin": false}"#).await;
    assert_eq!(ok.status(), 200);
    f.stop().await;
}

#[tokio::test]
async fn sink_down_gets_503_after_retries_and_dead_letter_takes_it_when_configured() {
    let port = closed_port();
    let route = format!(
        r#"
from:
  http: {{ path: /down }}
to:
  - http: {{ url: "http://127.0.0.1:{port}/in", timeout: 2s }}
errors:
  retry: {{ attempts: 2, backoff: 10ms }}
"#
    );
    let with_dl = format!(
        r#"
from:
  http: {{ path: /down-dl }}
to:
  - http: {{ url: "http://127.0.0.1:{port}/in", timeout: 2s }}
errors:
  retry: {{ attempts: 2, backoff: 10ms }}
  dead_letter: {{ file: {{ path: "{{dir}}/dead", name: "{{header.ferry-error-kind}}-{{id}}.json" }} }}
"#
    );
    let f = Ferry::start(&[("down.yaml", &route), ("down-dl.yaml", &with_dl)]).await;
    let resp = f.post("/down", "{}").await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let err: Value = resp.json().await.unwrap();
    assert!(
        err["error"].as_str().unwrap().contains("after 2 attempts"),
        "{err}"
    );

    let resp = f.post("/down-dl", r#"{"n":1}"#).await;
    assert_eq!(resp.status(), 202);
    let dead = files_in(&f.path("dead"));
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("retryable-")
    );
    assert_eq!(std::fs::read_to_string(&dead[0]).unwrap(), r#"{"n":1}"#);
    f.stop().await;
}

#[tokio::test]
async fn downstream_4xx_is_permanent_and_not_retried_5xx_is_retried() {
    let rejecting = Downstream::start(vec![422], Duration::ZERO).await;
    let flaky = Downstream::start(vec![503, 503, 200], Duration::ZERO).await;
    let routes = [
        (
            "reject.yaml",
            format!(
                "from:\n  http: {{ path: /reject }}\nto:\n  - http: {{ url: \"{}\" }}\nerrors:\n  retry: {{ attempts: 5, backoff: 10ms }}\n",
                rejecting.url()
            ),
        ),
        (
            "flaky.yaml",
            format!(
                "from:\n  http: {{ path: /flaky }}\nto:\n  - http: {{ url: \"{}\" }}\nerrors:\n  retry: {{ attempts: 5, backoff: 10ms }}\n",
                flaky.url()
            ),
        ),
    ];
    let routes: Vec<(&str, &str)> = routes.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let f = Ferry::start(&routes).await;

    let r = f.post("/reject", r#"{"a":1}"#).await;
    assert_eq!(r.status(), 500);
    assert_eq!(rejecting.hits(), 1, "a 4xx must not be retried");

    let r = f.post("/flaky", r#"{"a":1}"#).await;
    assert_eq!(r.status(), 200);
    assert_eq!(flaky.hits(), 3, "two 503s, then delivered");
    let bodies = flaky.bodies.lock().unwrap().clone();
    assert!(
        bodies
            .iter()
            .all(|(ct, b)| ct.is_empty() && b == r#"{"a":1}"#)
    );
    f.stop().await;
}

#[tokio::test]
async fn multicast_is_delivered_only_when_every_sink_confirmed() {
    let slow = Downstream::start(vec![200], Duration::from_millis(300)).await;
    let route = format!(
        r#"
from:
  http: {{ path: /both }}
steps:
  - json_to_xml: {{ root: event }}
to:
  - file: {{ path: "{{dir}}/a" }}
  - http: {{ url: "{}" }}
"#,
        slow.url()
    );
    let f = Ferry::start(&[("both.yaml", &route)]).await;
    let started = Instant::now();
    let r = f.post("/both", r#"{"id": 7, "tags": ["x", "y"]}"#).await;
    assert_eq!(r.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "replied before the slow sink confirmed"
    );
    assert_eq!(slow.hits(), 1);
    let (ct, body) = slow.bodies.lock().unwrap()[0].clone();
    assert_eq!(ct, "application/xml");
    assert!(
        body.contains("<event><id>7</id><tags>x</tags><tags>y</tags></event>"),
        "{body}"
    );
    let files = files_in(&f.path("a"));
    assert_eq!(files.len(), 1);
    assert!(files[0].extension().unwrap() == "xml");
    f.stop().await;
}

#[tokio::test]
async fn concurrent_requests_are_all_delivered_exactly_once() {
    let route = r#"
from:
  http: { path: /many }
concurrency: 8
to:
  - file: { path: "{dir}/out", name: "{header.x-n}-{uuid}.json" }
"#;
    let f = Ferry::start(&[("many.yaml", route)]).await;
    let c = http_client();
    let mut tasks = Vec::new();
    for n in 0..200 {
        let c = c.clone();
        let url = f.url("/many");
        tasks.push(tokio::spawn(async move {
            c.post(url)
                .header("x-n", n.to_string())
                .body(format!("{{\"n\":{n}}}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    // Each reply came after its file was written, and every write gets a
    // file of its own: a second delivery shows up as a second file.
    let ids = common::numbered_files(&f.path("out"));
    common::assert_each_once("files written", ids, 0..200);
    f.stop().await;
}
