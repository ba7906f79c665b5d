//! Delivery guarantees in-process: the embedded queue between routes, retries
//! while a sink is down, dead letters and their replay, redelivery when even
//! the dead-letter endpoint fails, and backpressure.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a panic is the report; helpers are shared by `mod common`

mod common;

use std::time::Duration;

use common::{Downstream, Ferry, closed_port, eventually, http_client};
use ferry::dead_letters::{self, ReplayRequest};

async fn post(f: &Ferry, path: &str, body: String) -> u16 {
    f.post(path, body).await.status().as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn http_to_queue_to_file_delivers_every_message() {
    let f = Ferry::start(&[
        ("in.yaml", "from:\n  http: { path: /in }\nto:\n  - queue: { name: work }\n"),
        (
            "out.yaml",
            "from:\n  queue: { name: work }\nconcurrency: 8\nto:\n  - file: { path: \"{dir}/out\", name: \"{header.x-n}-{uuid}.json\" }\n",
        ),
    ])
    .await;
    for n in 0..100 {
        let r = http_client()
            .post(f.url("/in"))
            .header("x-n", n.to_string())
            .body(format!("{{\"n\":{n}}}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Every delivery writes a file of its own (`{uuid}`), so a duplicate
    // shows; once the queue is empty and the engine stopped, none can follow.
    let store = f.engine.resources.queue_store().await.unwrap();
    eventually("queue drained", Duration::from_secs(30), || {
        store.queues().iter().all(|q| q.messages == 0).then_some(())
    })
    .await;
    f.stop().await;
    let ids = common::numbered_files(&f.path("out"));
    common::assert_each_once("files written", ids, 0..100);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sink_down_for_a_while_gets_every_message_once_it_is_back() {
    // Fails the first 30 requests, then accepts.
    let mut statuses = vec![503; 30];
    statuses.push(200);
    let down = Downstream::start(statuses, Duration::ZERO).await;
    let route = format!(
        "from:\n  queue: {{ name: q, redelivery_delay: 20ms }}\nto:\n  - http: {{ url: \"{}\" }}\nerrors:\n  retry: {{ attempts: 2, backoff: 5ms }}\n",
        down.url()
    );
    let f = Ferry::start(&[
        (
            "in.yaml",
            "from:\n  http: { path: /in }\nto:\n  - queue: { name: q }\n",
        ),
        ("out.yaml", &route),
    ])
    .await;
    for n in 0..20 {
        assert_eq!(post(&f, "/in", format!("{{\"n\":{n}}}")).await, 200);
    }
    eventually("all 20 delivered", Duration::from_secs(20), || {
        let bodies = down.bodies.lock().unwrap();
        let mut got: Vec<String> = bodies[30.min(bodies.len())..]
            .iter()
            .map(|(_, b)| b.clone())
            .collect();
        got.sort();
        got.dedup();
        (got.len() == 20).then_some(())
    })
    .await;
    let store = f.engine.resources.queue_store().await.unwrap();
    eventually("queue drained", Duration::from_secs(10), || {
        store.queues().iter().all(|q| q.messages == 0).then_some(())
    })
    .await;
    f.stop().await;
    // 30 refusals, then each message accepted once: none sent again after
    // its 200.
    let accepted = down.bodies.lock().unwrap().len() - 30;
    assert_eq!(accepted, 20, "{accepted} accepted requests for 20 messages");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sink_that_never_comes_back_fills_the_dead_letter_queue_and_replay_delivers_later() {
    let port = closed_port();
    let route = format!(
        "from:\n  queue: {{ name: work }}\nto:\n  - http: {{ url: \"http://127.0.0.1:{port}/in\", timeout: 1s }}\nerrors:\n  retry: {{ attempts: 2, backoff: 5ms }}\n  dead_letter: {{ queue: {{ name: work-dead }} }}\n"
    );
    let f = Ferry::start(&[
        (
            "in.yaml",
            "from:\n  http: { path: /in }\nto:\n  - queue: { name: work }\n",
        ),
        ("out.yaml", &route),
    ])
    .await;
    for n in 0..10 {
        assert_eq!(post(&f, "/in", format!("{{\"n\":{n}}}")).await, 200);
    }
    let store = f.engine.resources.queue_store().await.unwrap();
    eventually("10 dead letters", Duration::from_secs(10), || {
        (store.peek("work-dead", 100).unwrap().len() == 10).then_some(())
    })
    .await;
    let dead = dead_letters::view_list(&store, "work-dead", 100).unwrap();
    let h = &dead[0].headers;
    assert_eq!(h["ferry-error-kind"], "retryable");
    assert_eq!(h["ferry-attempts"], "2");
    assert_eq!(h["ferry-route"], "out");
    assert_eq!(h["ferry-source"], "queue work");
    assert!(
        h["ferry-error-stage"].starts_with("sink 1 (http POST"),
        "{h:?}"
    );
    assert!(h["ferry-error"].contains("connection failed"), "{h:?}");
    // The source acks (removes) a message after its dead letter is
    // committed, so the last ones may still be leaving.
    eventually(
        "dead-lettered messages to leave the work queue",
        Duration::from_secs(10),
        || store.peek("work", 100).unwrap().is_empty().then_some(()),
    )
    .await;

    // The sink comes back on the same port; replay sends them to their queue.
    let tcp = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let app = {
        let bodies = bodies.clone();
        axum::Router::new().fallback(move |body: String| {
            let bodies = bodies.clone();
            async move {
                bodies.lock().unwrap().push(body);
                "ok"
            }
        })
    };
    tokio::spawn(async move { axum::serve(tcp, app).await.unwrap() });
    let r = dead_letters::replay(
        &store,
        Some(&f.engine),
        "work-dead",
        &ReplayRequest::default(),
    )
    .await;
    assert_eq!(
        (r.replayed, r.failed.len(), r.remaining),
        (10, 0, 0),
        "{r:?}"
    );
    eventually(
        "the work queue drained after replay",
        Duration::from_secs(10),
        || store.queues().iter().all(|q| q.messages == 0).then_some(()),
    )
    .await;
    f.stop().await;
    let ids = bodies
        .lock()
        .unwrap()
        .iter()
        .map(common::n_of)
        .collect::<Vec<u64>>();
    common::assert_each_once("replayed messages at the sink", ids, 0..10);
}

#[tokio::test(flavor = "multi_thread")]
async fn permanent_failure_goes_straight_to_dead_letters_without_retries() {
    let rejecting = Downstream::start(vec![400], Duration::ZERO).await;
    let route = format!(
        "from:\n  http: {{ path: /in }}\nto:\n  - http: {{ url: \"{}\" }}\nerrors:\n  retry: {{ attempts: 5, backoff: 10ms }}\n  dead_letter: {{ queue: {{ name: dead }} }}\n",
        rejecting.url()
    );
    let f = Ferry::start(&[("in.yaml", &route)]).await;
    assert_eq!(post(&f, "/in", "{\"a\":1}".into()).await, 202);
    assert_eq!(rejecting.hits(), 1, "a permanent failure is not retried");
    let store = f.engine.resources.queue_store().await.unwrap();
    let dead = dead_letters::view_list(&store, "dead", 10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].headers["ferry-error-kind"], "permanent");
    assert_eq!(dead[0].headers["ferry-attempts"], "1");
    assert_eq!(dead[0].body, "{\"a\":1}");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn when_the_dead_letter_endpoint_fails_too_the_source_redelivers() {
    let rejecting = Downstream::start(vec![400], Duration::ZERO).await;
    let dl_port = closed_port();
    let http_route = format!(
        "from:\n  http: {{ path: /in }}\nto:\n  - http: {{ url: \"{}\" }}\nerrors:\n  dead_letter: {{ http: {{ url: \"http://127.0.0.1:{dl_port}/dead\" }} }}\n",
        rejecting.url()
    );
    let file_route = format!(
        "from:\n  file: {{ path: \"{{dir}}/in\", settle: 10ms, poll_interval: 100ms, retry_interval: 200ms }}\nto:\n  - http: {{ url: \"{}\" }}\nerrors:\n  dead_letter: {{ http: {{ url: \"http://127.0.0.1:{dl_port}/dead\" }} }}\n",
        rejecting.url()
    );
    let queue_route = format!(
        "from:\n  queue: {{ name: q, redelivery_delay: 10s }}\nto:\n  - http: {{ url: \"{}\" }}\nerrors:\n  dead_letter: {{ http: {{ url: \"http://127.0.0.1:{dl_port}/dead\" }} }}\n",
        rejecting.url()
    );
    let f = Ferry::start(&[
        ("in.yaml", http_route.as_str()),
        (
            "feed.yaml",
            "from:\n  http: { path: /feed }\nto:\n  - queue: { name: q }\n",
        ),
        ("q.yaml", &queue_route),
        ("files.yaml", &file_route),
    ])
    .await;
    // HTTP source: the client is told to retry, not that it was accepted.
    assert_eq!(post(&f, "/in", "{}".into()).await, 503);
    // Queue source: the message stays queued.
    assert_eq!(post(&f, "/feed", "{}".into()).await, 200);
    let store = f.engine.resources.queue_store().await.unwrap();
    eventually("the queue route tried it", Duration::from_secs(5), || {
        (rejecting.hits() >= 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let q = store.queues().into_iter().find(|q| q.name == "q").unwrap();
    assert_eq!(
        q.messages, 1,
        "the message must stay in the queue for redelivery"
    );
    // File source: the file stays where it was and is offered again.
    let file_body = r#"{"from":"file"}"#;
    std::fs::write(f.path("in/x.json"), file_body).unwrap();
    eventually(
        "the file to be offered twice",
        Duration::from_secs(20),
        || {
            let bodies = rejecting.bodies.lock().unwrap();
            (bodies.iter().filter(|(_, b)| b == file_body).count() >= 2).then_some(())
        },
    )
    .await;
    assert!(f.path("in/x.json").is_file(), "the file left the inbox");
    assert!(
        !f.path("in/.error/x.json").exists() && !f.path("in/.done/x.json").exists(),
        "a file whose dead letter failed was moved away"
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_saturated_route_answers_503_with_retry_after() {
    let slow = Downstream::start(vec![200], Duration::from_secs(3)).await;
    let route = format!(
        "from:\n  http: {{ path: /in, busy_wait: 100ms }}\nconcurrency: 1\nbuffer: 1\nto:\n  - http: {{ url: \"{}\" }}\n",
        slow.url()
    );
    let f = Ferry::start(&[("in.yaml", &route)]).await;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (c, url) = (http_client(), f.url("/in"));
        tasks.push(tokio::spawn(async move {
            let r = c.post(url).body("{}").send().await.unwrap();
            (r.status().as_u16(), r.headers().get("retry-after").cloned())
        }));
    }
    let mut busy = 0;
    for t in tasks {
        let (status, retry_after) = t.await.unwrap();
        if status == 503 {
            busy += 1;
            assert_eq!(retry_after.unwrap(), "1");
        } else {
            assert_eq!(status, 200);
        }
    }
    // One in a worker, one in the buffer; the rest are turned away.
    assert!(busy >= 3, "only {busy} requests were refused");
    f.stop().await;
}
