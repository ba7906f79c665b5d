//! The `ferry` binary: `check` reports every error with file:line:column,
//! `schema` prints a usable JSON Schema, `run` stops cleanly on SIGTERM after
//! finishing the request in flight. Every command runs with a deadline and
//! every `ferry run` on free ports, so a hang fails with what it waited for.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a panic is the report; helpers are shared by `mod common`

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{ChildGuard, Downstream};

fn ferry() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
}

/// Run a short `ferry` command (check, schema, dead-letters) to completion;
/// none of them may take a minute.
fn run(cmd: &mut Command) -> Output {
    common::output_within(cmd, Duration::from_secs(60))
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir.join(name).parent().unwrap()).unwrap();
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn check_reports_every_error_with_file_line_column_and_hints() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "routes/typo.yaml",
        "from:\n  http: { path: /a }\nstpes: []\n",
    );
    write(
        d,
        "routes/no-conn.yaml",
        "from:\n  http: { path: /b }\nto:\n  - http: { connector: shop-apii, path: /x }\n",
    );
    write(
        d,
        "routes/bad-path.yaml",
        "from:\n  http: { path: /c }\nsteps:\n  - jsonpath: \"$.a[?@.b ==]\"\n",
    );
    write(
        d,
        "routes/bad-script.yaml",
        "from:\n  http: { path: /d }\nsteps:\n  - script: |\n      let x = 1;\n      body.y = x +;\n",
    );
    write(d, "routes/dup1.yaml", "from:\n  http: { path: /same }\n");
    write(d, "routes/dup2.yaml", "from:\n  http: { path: /same }\n");
    write(d, "routes/ok.yaml", "from:\n  http: { path: /ok }\n");
    write(
        d,
        "connectors/shop-api.yaml",
        "kind: http\nbase_url: http://127.0.0.1:1\n",
    );
    let out = run(ferry()
        .current_dir(d)
        .args(["check", "routes", "--connectors", "connectors"]));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let expect = [
        "routes/typo.yaml:3:1: unknown field `stpes`",
        "did you mean `steps`?",
        "routes/no-conn.yaml:4:24: connector `shop-apii` not found",
        "did you mean `shop-api`?",
        "routes/bad-path.yaml:4:15: invalid JSONPath",
        "routes/bad-script.yaml:6:",
        "script error",
        "routes/dup2.yaml:2:3: `http 127.0.0.1:8080 POST /same` is already taken by route `dup1`",
        "5 error(s); 2 route(s) valid",
    ];
    for e in expect {
        assert!(err.contains(e), "missing {e:?} in:\n{err}");
    }
}

#[test]
fn check_passes_on_the_default_routes_and_examples() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = run(ferry().current_dir(root).arg("check"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for ex in std::fs::read_dir(root.join("examples")).unwrap().flatten() {
        if !ex.path().join("routes").is_dir() {
            continue;
        }
        let out = run(ferry().current_dir(ex.path()).arg("check"));
        assert!(
            out.status.success(),
            "{}: {}",
            ex.path().display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn schema_describes_routes_and_connectors() {
    let out = run(ferry().args(["schema"]));
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let props = &schema["properties"];
    for key in ["from", "steps", "to", "errors", "concurrency"] {
        assert!(props.get(key).is_some(), "route schema lacks {key}");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    for kind in [
        "xml_to_json",
        "jsonpath",
        "filter",
        "script",
        "set_header",
        "http",
        "file",
        "timer",
        "stdin",
        "stdout",
    ] {
        assert!(text.contains(&format!("\"{kind}\"")), "schema lacks {kind}");
    }
    let out = run(ferry().args(["schema", "connector"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("base_url"));
    // `kind: tcp` with its connection settings (and nothing route-specific).
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tcp = schema["oneOf"]
        .as_array()
        .and_then(|kinds| {
            kinds
                .iter()
                .find(|k| k["properties"]["kind"]["const"] == "tcp")
        })
        .unwrap_or_else(|| panic!("connector schema lacks kind tcp: {text}"));
    for key in ["connect", "framing", "timeout", "pool", "max_frame", "tls"] {
        assert!(
            tcp["properties"].get(key).is_some(),
            "tcp connector schema lacks {key}: {tcp}"
        );
    }
    assert!(tcp["properties"].get("reply").is_none());
    assert_eq!(tcp["additionalProperties"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_the_request_in_flight_then_exits_0() {
    common::within(
        "ferry run to finish the in-flight request and exit on SIGTERM",
        Duration::from_secs(120),
        sigterm_test(),
    )
    .await
}

async fn sigterm_test() {
    let slow = Downstream::start(vec![200], Duration::from_millis(1500)).await;
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (common::closed_port(), common::closed_port());
    write(
        dir.path(),
        "routes/slow.yaml",
        &format!(
            "from:\n  http: {{ path: /slow }}\nto:\n  - http: {{ url: \"{}\" }}\n",
            slow.url()
        ),
    );
    let mut child = ChildGuard::new(
        "ferry run",
        common::ferry_run(dir.path(), port, admin).spawn().unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}/slow");
    let end = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "ferry did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let client = common::http_client();
    let req = tokio::spawn(async move {
        client
            .post(url)
            .body("{}")
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    // Wait until the request reached the downstream, then ask Ferry to stop.
    while slow.hits() == 0 {
        assert!(Instant::now() < end, "request never reached downstream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.signal("TERM");
    assert_eq!(
        req.await.unwrap().unwrap(),
        200,
        "in-flight request must complete"
    );
    let status = common::wait_within(
        child.child(),
        "ferry run to exit after SIGTERM",
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_command_lists_replays_and_purges_through_a_running_ferry_and_offline() {
    common::within(
        "the dead-letters commands against a running and a stopped ferry",
        Duration::from_secs(180),
        dead_letters_test(),
    )
    .await
}

async fn dead_letters_test() {
    let dir = tempfile::tempdir().unwrap();
    let (http, admin, down) = (
        common::closed_port(),
        common::closed_port(),
        common::closed_port(),
    );
    write(
        dir.path(),
        "routes/in.yaml",
        "from:\n  http: { path: /in }\nto:\n  - queue: { name: work }\n",
    );
    write(
        dir.path(),
        "routes/out.yaml",
        &format!(
            "from:\n  queue: {{ name: work }}\nto:\n  - http: {{ url: \"http://127.0.0.1:{down}/x\" }}\nerrors:\n  retry: {{ attempts: 1 }}\n  dead_letter: {{ queue: {{ name: dead }} }}\n"
        ),
    );
    let admin_addr = format!("127.0.0.1:{admin}");
    let mut child = ChildGuard::new(
        "ferry run",
        common::ferry_run(dir.path(), http, admin)
            // The failing sink is the point here: its warnings are noise.
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let c = common::http_client();
    let end = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", admin)).is_err() {
        assert!(Instant::now() < end, "ferry did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    for n in 0..3 {
        let r = c
            .post(format!("http://127.0.0.1:{http}/in"))
            .body(format!("{{\"n\":{n}}}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let dl = |args: &[&str]| {
        let mut cmd = ferry();
        cmd.current_dir(dir.path())
            .arg("dead-letters")
            .args(args)
            .args(["--admin", &admin_addr]);
        let out = run(&mut cmd);
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, out) = dl(&["list", "dead"]);
        if out
            .lines()
            .filter(|l| l.contains("connection failed"))
            .count()
            == 3
        {
            assert!(out.contains("[sink 1 (http POST"), "{out}");
            break;
        }
        assert!(Instant::now() < end, "dead letters never listed: {out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Through the running Ferry (it holds the store).
    let (ok, out) = dl(&["replay", "dead", "--to-queue", "parked"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("replayed 3 message(s) from dead; 0 failed"),
        "{out}"
    );
    // Offline, on the store itself.
    assert_eq!(child.stop(Duration::from_secs(30)).code(), Some(0));
    let (ok, out) = dl(&["queues"]);
    assert!(ok, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("parked") && l.contains(" 3 messages")),
        "{out}"
    );
    let (ok, out) = dl(&["show", "parked", "0"]);
    assert!(
        ok && out.contains("\"ferry-error-kind\": \"retryable\""),
        "{out}"
    );
    let (ok, out) = dl(&["purge", "parked"]);
    assert!(!ok && out.contains("--yes"), "{out}");
    let (ok, out) = dl(&["purge", "parked", "--yes"]);
    assert!(ok && out.contains("purged 3 message(s)"), "{out}");
}
