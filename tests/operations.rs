//! What docs/operations.md and docs/delivery.md promise an operator, checked on
//! a real `ferry run` process (the signal handling, readiness and log setup
//! live in `main.rs`, so only the binary shows them): `/health`, `/ready`
//! (503 while stopping), the Prometheus series of `/metrics` moving with
//! traffic, `POST /admin/reload` and its report, the shutdown 503 and the
//! drain timeout, `--queue-fsync interval:…`, `--log-format json`, and that
//! passwords and connector header values reach no log line (at debug level),
//! admin answer, HTTP error reply or `ferry check` output. Also the
//! `remove_header` step, which keeps such headers from reaching sinks.
//!
//! Every process runs on free loopback ports, is SIGKILLed when its guard is
//! dropped, and every wait has a deadline that fails with what it waited for.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a panic is the report; helpers are shared by `mod common`

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{ChildGuard, Downstream, HTTP_TIMEOUT};

/// A `ferry run` in its own temp folder, stderr in `ferry.log`; killed on
/// drop so a failed assertion never leaves a process behind.
struct Running {
    child: ChildGuard,
    dir: tempfile::TempDir,
    http: u16,
    admin: u16,
    client: reqwest::Client,
}

fn write_files(dir: &Path, files: &[(&str, &str)]) {
    let d = dir.display().to_string();
    for (name, text) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text.replace("{dir}", &d)).unwrap();
    }
}

impl Running {
    /// Write `files` (path relative to the folder, text with `{dir}` replaced
    /// by the folder), run `ferry run --no-watch ARGS` with `env` (which may
    /// override `FERRY_LOG`), and wait until `/ready` answers 200.
    async fn start(files: &[(&str, &str)], args: &[&str], env: &[(&str, &str)]) -> Running {
        let dir = tempfile::tempdir().unwrap();
        write_files(dir.path(), files);
        let (http, admin) = (common::closed_port(), common::closed_port());
        let log = std::fs::File::create(dir.path().join("ferry.log")).unwrap();
        let mut cmd = common::ferry_run(dir.path(), http, admin);
        cmd.arg("--no-watch").args(args).stderr(Stdio::from(log));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = ChildGuard::new("ferry run", cmd.spawn().expect("spawn ferry run"))
            .with_log(dir.path().join("ferry.log"));
        let mut ferry = Running {
            child,
            dir,
            http,
            admin,
            client: common::http_client(),
        };
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = ferry.child.child().try_wait().unwrap() {
                panic!("ferry run exited with {status} at start:\n{}", ferry.log());
            }
            if let Ok(r) = ferry.client.get(ferry.admin_url("/ready")).send().await
                && r.status() == 200
            {
                return ferry;
            }
            assert!(
                Instant::now() < end,
                "ferry run not ready after 30s:\n{}",
                ferry.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, files: &[(&str, &str)]) {
        write_files(self.dir.path(), files);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("ferry.log")).unwrap_or_default()
    }

    async fn get(&self, url: String) -> (u16, String) {
        let r = self.client.get(&url).send().await;
        let r = r.unwrap_or_else(|e| panic!("GET {url}: {e}"));
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn post(&self, url: String, body: &str) -> (u16, String) {
        let r = self.client.post(&url).body(body.to_string()).send().await;
        let r = r.unwrap_or_else(|e| panic!("POST {url}: {e}"));
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// `POST /admin/reload`: status and the report.
    async fn reload(&self) -> (u16, serde_json::Value) {
        let (status, text) = self.post(self.admin_url("/admin/reload"), "").await;
        let report = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("reload report is not JSON ({e}): {text}"));
        (status, report)
    }

    async fn metrics(&self) -> Exposition {
        let (status, text) = self.get(self.admin_url("/metrics")).await;
        assert_eq!(status, 200, "{text}");
        Exposition::parse(&text)
    }

    fn sigterm(&self) {
        self.child.signal("TERM");
    }

    /// Wait for the process to exit; after `deadline`, SIGKILL it and fail.
    fn exit_status(&mut self, deadline: Duration) -> ExitStatus {
        // A blocking wait: the runtime's other workers keep serving the
        // in-process downstreams meanwhile.
        tokio::task::block_in_place(|| self.child.wait(deadline))
    }
}

/// Run a `ferry` subcommand in `dir` with `env` to completion; its stdout,
/// then its stderr. Killed, and the test failed, after 60 s.
fn ferry_cmd(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.current_dir(dir).args(args).envs(env.iter().copied());
    let out =
        tokio::task::block_in_place(|| common::output_within(&mut cmd, Duration::from_secs(60)));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A Prometheus text exposition: every sample by `name{label="v",…}` (labels
/// sorted), and the `# TYPE` of every metric family. A line that does not
/// parse fails the test: Prometheus would refuse the scrape.
struct Exposition {
    samples: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
}

impl Exposition {
    fn parse(text: &str) -> Exposition {
        let mut samples = BTreeMap::new();
        let mut types = BTreeMap::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Some(t) = line.strip_prefix("# TYPE ") {
                let (name, kind) = t.split_once(' ').expect(line);
                types.insert(name.to_string(), kind.to_string());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = match line.find('{') {
                Some(open) => {
                    let close = line
                        .rfind('}')
                        .unwrap_or_else(|| panic!("bad sample {line}"));
                    let mut labels: Vec<&str> = line[open + 1..close]
                        .split(',')
                        .filter(|l| !l.is_empty())
                        .inspect(|l| {
                            let (k, v) = l.split_once('=').expect(line);
                            assert!(!k.is_empty() && v.starts_with('"') && v.ends_with('"'));
                        })
                        .collect();
                    labels.sort();
                    (
                        format!("{}{{{}}}", &line[..open], labels.join(",")),
                        &line[close + 1..],
                    )
                }
                None => {
                    let (name, value) = line.split_once(' ').expect(line);
                    (name.to_string(), value)
                }
            };
            let value = value.split_whitespace().next().expect(line);
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line}"));
            assert!(
                samples.insert(series.clone(), value).is_none(),
                "duplicate series {series}"
            );
        }
        Exposition { samples, types }
    }

    /// The value of `name` with exactly `labels`; 0 when the series does not
    /// exist yet (counters appear at their first increment).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        l.sort();
        let key = if l.is_empty() {
            name.to_string()
        } else {
            format!("{name}{{{}}}", l.join(","))
        };
        self.samples.get(&key).copied().unwrap_or(0.0)
    }
}

// ------------------------------------------------------------ admin endpoint

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_turns_ready_and_new_requests_503_while_the_request_in_flight_finishes() {
    let slow = Downstream::start(vec![200], Duration::from_secs(5)).await;
    let route = format!(
        "from:\n  http: {{ path: /slow }}\nto:\n  - http: {{ url: \"{}\" }}\n",
        slow.url()
    );
    let mut ferry = Running::start(&[("routes/slow.yaml", &route)], &[], &[]).await;
    assert_eq!(
        ferry.get(ferry.admin_url("/health")).await,
        (200, "ok\n".into())
    );
    assert_eq!(ferry.get(ferry.admin_url("/ready")).await.0, 200);

    let (c, url) = (ferry.client.clone(), ferry.url("/slow"));
    let in_flight = tokio::spawn(async move { c.post(url).body("{}").send().await });
    common::eventually("the request to reach the downstream", HTTP_TIMEOUT, || {
        (slow.hits() == 1).then_some(())
    })
    .await;
    ferry.sigterm();
    // The downstream holds the request for 5 s: everything below happens while
    // Ferry drains it (checked at the end).
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let r = ferry.client.get(ferry.admin_url("/ready")).send().await;
        match r {
            Ok(r) if r.status() == 503 => break,
            Ok(r) => assert_eq!(r.status(), 200, "/ready while stopping"),
            Err(e) => panic!("/ready unreachable while stopping: {e}"),
        }
        assert!(Instant::now() < end, "/ready still 200 10s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        ferry.get(ferry.admin_url("/health")).await.0,
        200,
        "/health while the process runs"
    );
    let r = ferry
        .client
        .post(ferry.url("/slow"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "a new request while stopping");
    assert_eq!(r.headers()["retry-after"], "1");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "ferry is shutting down");
    assert!(
        !in_flight.is_finished(),
        "the checks above must run while the first request is in flight"
    );
    let first = in_flight.await.unwrap().expect("in-flight request");
    assert_eq!(first.status(), 200, "the request in flight is finished");
    assert_eq!(
        slow.hits(),
        1,
        "the 503 request never reached the downstream"
    );
    let status = ferry.exit_status(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", ferry.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_unfinished_at_the_drain_timeout_gets_503_and_ferry_exits_0() {
    // The downstream would answer after a minute; the route drains for 1 s.
    let stuck = Downstream::start(vec![200], Duration::from_secs(60)).await;
    let route = format!(
        "from:\n  http: {{ path: /stuck }}\ndrain_timeout: 1s\nto:\n  - http: {{ url: \"{}\", timeout: 120s }}\n",
        stuck.url()
    );
    let mut ferry = Running::start(&[("routes/stuck.yaml", &route)], &[], &[]).await;
    let (c, url) = (ferry.client.clone(), ferry.url("/stuck"));
    let in_flight = tokio::spawn(async move { c.post(url).body("{}").send().await });
    common::eventually("the request to reach the downstream", HTTP_TIMEOUT, || {
        (stuck.hits() == 1).then_some(())
    })
    .await;
    ferry.sigterm();
    // Without the drain timeout the exit would wait for the downstream's minute.
    let status = ferry.exit_status(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", ferry.log());
    let r = in_flight
        .await
        .unwrap()
        .expect("an answer, not a dropped connection");
    assert_eq!(r.status(), 503, "unfinished = failed, retryable");
    assert!(
        ferry.log().contains("drain timeout"),
        "the drain timeout is logged:\n{}",
        ferry.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_series_follow_each_outcome_and_every_reload() {
    let down = common::closed_port();
    let routes = [
        (
            "routes/deliver.yaml",
            "from:\n  http: { path: /deliver }\nto:\n  - file: { path: \"{dir}/out\", name: \"{id}.json\" }\n"
                .to_string(),
        ),
        (
            "routes/drop.yaml",
            "from:\n  http: { path: /drop }\nsteps:\n  - filter: \"false\"\nto:\n  - file: { path: \"{dir}/out\" }\n"
                .to_string(),
        ),
        (
            "routes/dead.yaml",
            format!(
                "from:\n  http: {{ path: /dead }}\nto:\n  - http: {{ url: \"http://127.0.0.1:{down}/x\" }}\nerrors:\n  retry: {{ attempts: 1 }}\n  dead_letter: {{ file: {{ path: \"{{dir}}/dead\" }} }}\n"
            ),
        ),
        (
            "routes/fail.yaml",
            format!(
                "from:\n  http: {{ path: /fail }}\nto:\n  - http: {{ url: \"http://127.0.0.1:{down}/x\" }}\nerrors:\n  retry: {{ attempts: 1 }}\n"
            ),
        ),
    ];
    let files: Vec<(&str, &str)> = routes.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let ferry = Running::start(&files, &[], &[]).await;
    let before = ferry.metrics().await;
    for (name, kind) in [
        ("ferry_reloads_total", "counter"),
        ("ferry_reload_duration_seconds", "summary"),
        ("ferry_routes_running", "gauge"),
    ] {
        assert_eq!(
            before.types.get(name).map(String::as_str),
            Some(kind),
            "type of {name}"
        );
    }
    assert_eq!(before.value("ferry_routes_running", &[]), 4.0);
    assert_eq!(
        before.value("ferry_reloads_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(
        before.value("ferry_reload_duration_seconds_count", &[]),
        1.0
    );

    // 3 delivered, 2 dropped, 1 dead-lettered, 1 failed.
    for (path, n, want) in [
        ("/deliver", 3, 200),
        ("/drop", 2, 204),
        ("/dead", 1, 202),
        ("/fail", 1, 503),
    ] {
        for i in 0..n {
            let (status, text) = ferry.post(ferry.url(path), &format!("{{\"n\":{i}}}")).await;
            assert_eq!(status, want, "{path}: {text}");
        }
    }
    let after = ferry.metrics().await;
    assert_eq!(
        after.types.get("ferry_messages_total").map(String::as_str),
        Some("counter")
    );
    assert_eq!(
        after.types.get("ferry_message_seconds").map(String::as_str),
        Some("summary")
    );
    let outcomes = ["delivered", "dropped", "dead_lettered", "failed"];
    for (route, expected) in [
        ("deliver", 3.0),
        ("drop", 2.0),
        ("dead", 1.0),
        ("fail", 1.0),
    ] {
        for outcome in outcomes {
            let want = match (route, outcome) {
                ("deliver", "delivered")
                | ("drop", "dropped")
                | ("dead", "dead_lettered")
                | ("fail", "failed") => expected,
                _ => 0.0,
            };
            let labels = [("route", route), ("outcome", outcome)];
            assert_eq!(
                after.value("ferry_messages_total", &labels)
                    - before.value("ferry_messages_total", &labels),
                want,
                "ferry_messages_total{{route={route},outcome={outcome}}}"
            );
        }
        let count = after.value("ferry_message_seconds_count", &[("route", route)]);
        assert_eq!(
            count, expected,
            "ferry_message_seconds_count{{route={route}}}"
        );
        assert!(after.value("ferry_message_seconds_sum", &[("route", route)]) > 0.0);
    }
    assert_eq!(common::files_in(&ferry.path("out")).len(), 3);

    // A reload that adds a route, then one that finds an invalid file.
    ferry.write(&[("routes/more.yaml", "from:\n  http: { path: /more }\n")]);
    assert_eq!(ferry.reload().await.0, 200);
    ferry.write(&[(
        "routes/broken.yaml",
        "from:\n  http: { path: /b }\nstpes: []\n",
    )]);
    assert_eq!(ferry.reload().await.0, 422);
    let reloaded = ferry.metrics().await;
    assert_eq!(reloaded.value("ferry_routes_running", &[]), 5.0);
    assert_eq!(
        reloaded.value("ferry_reloads_total", &[("result", "ok")]),
        2.0
    );
    assert_eq!(
        reloaded.value("ferry_reloads_total", &[("result", "error")]),
        1.0
    );
    assert_eq!(
        reloaded.value("ferry_reload_duration_seconds_count", &[]),
        3.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_reload_applies_changes_and_answers_422_with_the_report_when_a_file_is_invalid() {
    let mut ferry = Running::start(
        &[("routes/a.yaml", "from:\n  http: { path: /a }\n")],
        &[],
        &[],
    )
    .await;
    assert_eq!(ferry.post(ferry.url("/a"), "{}").await.0, 200);

    ferry.write(&[("routes/b.yaml", "from:\n  http: { path: /b }\n")]);
    let (status, report) = ferry.reload().await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["started"], serde_json::json!(["b"]), "{report}");
    assert_eq!(report["unchanged"], serde_json::json!(["a"]), "{report}");
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
    assert_eq!(ferry.post(ferry.url("/b"), "{}").await.0, 200);

    // `a` turns invalid and a new file is invalid: 422, each error with
    // file:line:column, and the old version of `a` keeps serving.
    ferry.write(&[
        ("routes/a.yaml", "from:\n  http: { path: /a }\nstpes: []\n"),
        ("routes/new.yaml", "from:\n  htp: { path: /new }\n"),
    ]);
    let (status, report) = ferry.reload().await;
    assert_eq!(status, 422, "{report}");
    assert_eq!(
        report["kept_old_version"],
        serde_json::json!(["a"]),
        "{report}"
    );
    let errors = report["errors"].as_array().expect("errors list");
    assert_eq!(errors.len(), 2, "{report}");
    let e = report["errors"].to_string();
    assert!(
        e.contains("routes/a.yaml:3:1: unknown field `stpes`"),
        "{e}"
    );
    assert!(e.contains("routes/new.yaml:2:3:"), "{e}");
    assert_eq!(
        ferry.post(ferry.url("/a"), "{}").await.0,
        200,
        "old a serves"
    );
    let (_, text) = ferry.get(ferry.admin_url("/admin/routes")).await;
    let status_doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    // A file with no running version is listed as invalid; `a` runs and
    // carries its error.
    let invalid = status_doc["invalid_files"]
        .as_object()
        .expect("invalid_files");
    assert_eq!(
        invalid.keys().collect::<Vec<_>>(),
        ["routes/new.yaml"],
        "{status_doc}"
    );
    let a = status_doc["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "a")
        .unwrap_or_else(|| panic!("route a not listed: {status_doc}"));
    assert!(a["last_reload_error"].to_string().contains("stpes"), "{a}");

    // A valid file whose route cannot start (its port is taken) is a 422 too,
    // listed as data.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    std::fs::remove_file(ferry.path("routes/new.yaml")).unwrap();
    ferry.write(&[
        ("routes/a.yaml", "from:\n  http: { path: /a }\n"),
        (
            "routes/c.yaml",
            &format!("from:\n  http: {{ path: /c, listen: \"127.0.0.1:{port}\" }}\n"),
        ),
    ]);
    let (status, report) = ferry.reload().await;
    assert_eq!(status, 422, "{report}");
    let failed = report["failed_to_start"]
        .as_array()
        .expect("failed_to_start");
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0]["route"], "c", "{report}");
    assert!(
        failed[0]["error"].to_string().contains(&port.to_string()),
        "{report}"
    );
    assert_eq!(
        ferry.post(ferry.url("/b"), "{}").await.0,
        200,
        "b untouched"
    );
    ferry.sigterm();
    assert_eq!(ferry.exit_status(Duration::from_secs(30)).code(), Some(0));
}

// --------------------------------------------------------------- run options

#[tokio::test(flavor = "multi_thread")]
async fn queue_fsync_interval_delivers_every_message_once_and_a_clean_stop_keeps_the_rest() {
    const N: usize = 60;
    let files = [
        (
            "routes/in.yaml",
            "from:\n  http: { path: /in }\nto:\n  - queue: { name: work }\n",
        ),
        (
            "routes/out.yaml",
            "from:\n  queue: { name: work }\nto:\n  - file: { path: \"{dir}/out\", name: all.jsonl, append: true }\n",
        ),
        (
            "routes/park.yaml",
            "from:\n  http: { path: /park }\nto:\n  - queue: { name: parked }\n",
        ),
    ];
    // 10 s: no periodic fsync happens during the test, only the one at stop.
    let mut ferry = Running::start(&files, &["--queue-fsync", "interval:10s"], &[]).await;
    for n in 0..N {
        let (status, text) = ferry
            .post(ferry.url("/in"), &format!("{{\"n\":{n}}}"))
            .await;
        assert_eq!(status, 200, "{text}");
        let (status, text) = ferry
            .post(ferry.url("/park"), &format!("{{\"n\":{n}}}"))
            .await;
        assert_eq!(status, 200, "{text}");
    }
    let out = ferry.path("out/all.jsonl");
    let lines = || -> Vec<u64> {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(common::n_of)
            .collect()
    };
    common::eventually(
        &format!("{N} lines in all.jsonl"),
        Duration::from_secs(60),
        || (lines().len() >= N).then_some(()),
    )
    .await;
    ferry.sigterm();
    assert_eq!(ferry.exit_status(Duration::from_secs(30)).code(), Some(0));
    // Appended lines show a duplicate as a second line.
    let mut seen = lines();
    seen.sort();
    assert_eq!(
        seen,
        (0..N as u64).collect::<Vec<_>>(),
        "each delivered once"
    );
    // Nothing consumed `parked`: a clean stop must have made all of it durable.
    let (ok, text) = ferry_cmd(
        ferry.dir.path(),
        &[
            "dead-letters",
            "queues",
            "--admin",
            &format!("127.0.0.1:{}", ferry.admin),
        ],
        &[],
    );
    assert!(ok, "{text}");
    let parked = text
        .lines()
        .find(|l| l.starts_with("parked"))
        .unwrap_or_else(|| panic!("no parked queue after restart: {text}"));
    assert!(parked.contains(&format!(" {N} messages")), "{text}");
    let work = text.lines().find(|l| l.starts_with("work")).unwrap_or("");
    assert!(work.contains(" 0 messages"), "work drained: {text}");
}

/// Every log line as JSON; fails on the first one that is not an object.
fn json_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"));
            assert!(v.is_object(), "log line is not an object: {l}");
            v
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn json_log_format_writes_one_object_per_line_and_message_logs_carry_route_and_id() {
    let down = common::closed_port();
    let files = [
        (
            "routes/noted.yaml",
            "from:\n  http: { path: /noted }\nsteps:\n  - log: \"order {header.x-n} seen\"\n  - filter: \"body.keep\"\nto:\n  - file: { path: \"{dir}/out\", name: \"{id}.json\" }\n"
                .to_string(),
        ),
        (
            "routes/failing.yaml",
            format!(
                "from:\n  http: {{ path: /failing }}\nto:\n  - http: {{ url: \"http://127.0.0.1:{down}/x\" }}\nerrors:\n  retry: {{ attempts: 1 }}\n"
            ),
        ),
    ];
    let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    // Debug level for every crate: the most lines, from Ferry and its libraries.
    let mut ferry =
        Running::start(&files, &["--log-format", "json"], &[("FERRY_LOG", "debug")]).await;
    let send = |path: &str, n: u32, body: &str| {
        let req = ferry
            .client
            .post(ferry.url(path))
            .header("x-n", n.to_string())
            .body(body.to_string());
        async move {
            let r = req.send().await.unwrap();
            let id = r.headers()["ferry-message-id"]
                .to_str()
                .unwrap()
                .to_string();
            (r.status().as_u16(), id)
        }
    };
    let (kept, kept_id) = send("/noted", 1, "{\"keep\": true}").await;
    let (dropped, dropped_id) = send("/noted", 2, "{\"keep\": false}").await;
    let (failed, failed_id) = send("/failing", 3, "{}").await;
    assert_eq!((kept, dropped, failed), (200, 204, 503));
    ferry.sigterm();
    assert_eq!(ferry.exit_status(Duration::from_secs(30)).code(), Some(0));

    let lines = json_lines(&ferry.log());
    let by_message = |text: &str| -> &serde_json::Value {
        lines
            .iter()
            .find(|l| {
                l["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(text))
            })
            .unwrap_or_else(|| panic!("no log line with {text:?} in {} lines", lines.len()))
    };
    for l in &lines {
        assert!(l["timestamp"].is_string() && l["level"].is_string(), "{l}");
    }
    assert!(by_message("ferry is running")["level"] == "INFO");
    for (text, route, id) in [
        ("order 1 seen", "noted", &kept_id),
        ("order 2 seen", "noted", &dropped_id),
        ("message dropped", "noted", &dropped_id),
        ("message failed", "failing", &failed_id),
    ] {
        let l = by_message(text);
        assert_eq!(l["fields"]["route"], route, "{l}");
        assert_eq!(l["fields"]["message_id"], id.as_str(), "{l}");
    }
    let debug = lines.iter().filter(|l| l["level"] == "DEBUG").count();
    assert!(debug > 0, "FERRY_LOG=debug gave no debug line");
    println!("{} JSON log lines, {debug} at debug level", lines.len());
}

// ------------------------------------------------------------------- secrets

#[tokio::test(flavor = "multi_thread")]
async fn passwords_and_connector_headers_never_reach_logs_admin_answers_or_check_output() {
    // The secret has the characters that break naive URL masking.
    const SECRET: &str = "Pw@1/x%y";
    const ENCODED: &str = "Pw%401%2Fx%25y";
    let down = Downstream::start(vec![500], Duration::ZERO).await;
    let first = [("routes/up.yaml", "from:\n  http: { path: /up }\n")];
    let pg_down = common::closed_port();
    let mut ferry = Running::start(
        &first,
        &[],
        &[
            ("FERRY_LOG", "debug"),
            ("RAW", SECRET),
            ("ENCODED", ENCODED),
            ("DOWN_PORT", &pg_down.to_string()),
        ],
    )
    .await;
    let connectors = [
        // URL forms with the password percent-encoded, as a URL needs it…
        (
            "connectors/rabbit.yaml",
            "kind: amqp\nurl: \"amqp://ferry:${ENCODED}@127.0.0.1:5672/%2f\"\nconnect_timeout: 3s\n".to_string(),
        ),
        (
            "connectors/cache.yaml",
            "kind: redis\nurl: \"redis://nobody:${ENCODED}@127.0.0.1:6379/0\"\nconnect_timeout: 3s\n".to_string(),
        ),
        (
            "connectors/db.yaml",
            format!("kind: postgres\nurl: \"postgres://ferry:${{ENCODED}}@127.0.0.1:{pg_down}/test\"\nconnect_timeout: 3s\n"),
        ),
        // …and as typed, which a URL parser splits in odd places.
        (
            "connectors/rabbit-raw.yaml",
            "kind: amqp\nurl: \"amqp://ferry:${RAW}@127.0.0.1:5672/%2f\"\nconnect_timeout: 3s\n".to_string(),
        ),
        (
            "connectors/cache-raw.yaml",
            "kind: redis\nurl: \"redis://nobody:${RAW}@127.0.0.1:6379/0\"\nconnect_timeout: 3s\n".to_string(),
        ),
        // The key=value form of PostgreSQL.
        (
            "connectors/db-kv.yaml",
            format!("kind: postgres\nurl: \"host=127.0.0.1 port={pg_down} user=ferry password='${{RAW}}' dbname=test\"\nconnect_timeout: 3s\n"),
        ),
        // Password fields and header values.
        (
            "connectors/bus.yaml",
            "kind: nats\nurl: nats://127.0.0.1:4222\nuser: ferry\npassword: \"${RAW}\"\nconnect_timeout: 3s\n".to_string(),
        ),
        (
            "connectors/plant.yaml",
            "kind: mqtt\nurl: mqtt://127.0.0.1:1883\nusername: ferry\npassword: \"${RAW}\"\nconnect_timeout: 3s\n".to_string(),
        ),
        (
            "connectors/api.yaml",
            format!("kind: http\nbase_url: \"http://{}\"\nheaders:\n  authorization: \"Bearer ${{RAW}}\"\n  x-api-key: \"${{ENCODED}}\"\n", down.addr),
        ),
    ];
    let routes = [
        (
            "routes/amqp.yaml",
            "from:\n  http: { path: /amqp }\nto:\n  - amqp: { connector: rabbit, exchange: \"\", routing_key: q }\n",
        ),
        (
            "routes/amqp-raw.yaml",
            "from:\n  http: { path: /amqp-raw }\nto:\n  - amqp: { connector: rabbit-raw, exchange: \"\", routing_key: q }\n",
        ),
        (
            "routes/redis.yaml",
            "from:\n  http: { path: /redis }\nto:\n  - redis: { connector: cache, stream: s }\n",
        ),
        (
            "routes/redis-raw.yaml",
            "from:\n  http: { path: /redis-raw }\nto:\n  - redis: { connector: cache-raw, stream: s }\n",
        ),
        (
            "routes/pg.yaml",
            "from:\n  http: { path: /pg }\nto:\n  - postgres: { connector: db, table: t, columns: { doc: \"{body}\" } }\n",
        ),
        (
            "routes/pg-kv.yaml",
            "from:\n  http: { path: /pg-kv }\nto:\n  - postgres: { connector: db-kv, table: t, columns: { doc: \"{body}\" } }\n",
        ),
        (
            "routes/nats.yaml",
            "from:\n  http: { path: /nats }\nto:\n  - nats: { connector: bus, subject: ferry.secret }\n",
        ),
        (
            "routes/mqtt.yaml",
            "from:\n  http: { path: /mqtt }\nto:\n  - mqtt: { connector: plant, topic: ferry/secret }\n",
        ),
        (
            "routes/basic-auth.yaml",
            "from:\n  http: { path: /basic-auth }\nto:\n  - http: { url: \"http://ferry:${ENCODED}@127.0.0.1:${DOWN_PORT}/x\" }\nerrors:\n  retry: { attempts: 1 }\n",
        ),
        (
            "routes/api.yaml",
            "from:\n  http: { path: /api }\nto:\n  - http: { connector: api, path: /in }\nerrors:\n  retry: { attempts: 1 }\n  dead_letter: { queue: { name: dead } }\n",
        ),
    ];
    let conn_files: Vec<(&str, &str)> = connectors.iter().map(|(n, t)| (*n, t.as_str())).collect();
    ferry.write(&conn_files);
    ferry.write(&routes);

    let mut answers = String::new();
    let (status, report) = ferry.reload().await;
    answers.push_str(&report.to_string());
    // The refused ones fail visibly (and their masked form is what shows).
    assert_eq!(status, 422, "{report}");
    let failed: Vec<&str> = report["failed_to_start"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["route"].as_str().unwrap())
        .collect();
    for route in ["amqp", "redis", "pg", "pg-kv"] {
        assert!(
            failed.contains(&route),
            "{route} should fail to start: {report}"
        );
    }
    for masked in [
        "amqp://ferry:***@",
        "redis://nobody:***@",
        "postgres://ferry:***@",
        "password=***",
    ] {
        assert!(answers.contains(masked), "no {masked} in {report}");
    }
    for path in ["/admin/routes", "/admin/queues"] {
        let (_, text) = ferry.get(ferry.admin_url(path)).await;
        answers.push_str(&text);
    }
    // A message through the connector with secret headers: the downstream
    // refuses it, the error goes to the client, the log and a dead letter.
    for path in ["/api", "/nats", "/mqtt", "/basic-auth"] {
        let (_, text) = ferry.post(ferry.url(path), "{\"n\":1}").await;
        answers.push_str(&text);
    }
    assert_eq!(down.hits(), 1, "the api route reached its downstream");
    assert!(
        answers.contains("http://ferry:***@127.0.0.1"),
        "the basic-auth sink's failure shows its masked URL: {answers}"
    );
    let (_, dead) = ferry
        .get(ferry.admin_url("/admin/queues/dead/messages"))
        .await;
    assert!(dead.contains("500"), "the failure is dead-lettered: {dead}");
    answers.push_str(&dead);
    let admin = format!("127.0.0.1:{}", ferry.admin);
    let (_, listed) = ferry_cmd(
        ferry.dir.path(),
        &["dead-letters", "list", "dead", "--admin", &admin],
        &[],
    );
    answers.push_str(&listed);
    ferry.sigterm();
    assert_eq!(ferry.exit_status(Duration::from_secs(60)).code(), Some(0));

    // `ferry check` on the same files (the raw redis URL does not parse), plus a
    // PostgreSQL string that does not either.
    ferry.write(&[
        (
            "connectors/bad-pg.yaml",
            "kind: postgres\nurl: \"host=127.0.0.1 port=notaport password='${RAW}'\"\n",
        ),
        ("routes/bad-pg.yaml", "from:\n  http: { path: /bad-pg }\nto:\n  - postgres: { connector: bad-pg, table: t, columns: { doc: \"{body}\" } }\n"),
    ]);
    let (check_ok, check_text) = ferry_cmd(
        ferry.dir.path(),
        &["check"],
        &[("RAW", SECRET), ("ENCODED", ENCODED)],
    );
    assert!(!check_ok, "the bad URLs are errors: {check_text}");
    assert!(
        check_text.contains("bad-pg.yaml") && check_text.contains("password=***"),
        "{check_text}"
    );

    let log = ferry.log();
    assert!(
        log.lines().count() > 50 && log.contains("DEBUG"),
        "debug log:\n{log}"
    );
    for (what, text) in [
        ("log", &log),
        ("admin and HTTP answers", &answers),
        ("ferry check", &check_text),
    ] {
        for secret in [SECRET, ENCODED, "Pw@1", "x%y", "1%2Fx"] {
            let leaks: Vec<&str> = text.lines().filter(|l| l.contains(secret)).collect();
            assert!(
                leaks.is_empty(),
                "{what} shows the secret {secret:?}:\n{}",
                leaks.join("\n")
            );
        }
    }
}

// ------------------------------------------------------------- remove_header

#[tokio::test(flavor = "multi_thread")]
async fn remove_header_drops_named_and_prefixed_headers_before_the_sink() {
    // The script puts the headers that reach it into the body, so the file shows them.
    let show = "  - script: \"body = headers;\"\nto:\n  - file: { path: \"{dir}/out\", name: \"{header.x-n}.json\" }\n";
    let stripped = format!(
        "from:\n  http: {{ path: /stripped }}\nsteps:\n  - remove_header: x-secret\n  - remove_header: {{ names: [X-Token, x-absent], prefix: \"http.\" }}\n{show}"
    );
    let kept = format!("from:\n  http: {{ path: /kept }}\nsteps:\n{show}");
    let f = common::Ferry::start(&[("stripped.yaml", &stripped), ("kept.yaml", &kept)]).await;
    let c = common::http_client();
    for (path, n) in [("/kept", "1"), ("/stripped", "2")] {
        let r = c
            .post(f.url(path))
            .header("x-n", n)
            .header("x-secret", "s3cret")
            .header("x-token", "t0ken")
            .header("x-keep", "yes")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    let read = |n: &str| -> serde_json::Map<String, serde_json::Value> {
        let text = std::fs::read_to_string(f.path(&format!("out/{n}.json"))).unwrap();
        serde_json::from_str(&text).unwrap()
    };
    // Without the step every header arrives: the check below can fail.
    let all = read("1");
    for h in ["x-secret", "x-token", "x-keep", "http.method", "http.path"] {
        assert!(
            all.contains_key(h),
            "{h} missing without remove_header: {all:?}"
        );
    }
    let left = read("2");
    for h in ["x-secret", "x-token", "http.method", "http.path"] {
        assert!(
            !left.contains_key(h),
            "{h} survived remove_header: {left:?}"
        );
    }
    assert_eq!(left["x-keep"], "yes");
    assert_eq!(left["x-n"], "2");
    f.engine.shutdown().await;
}
