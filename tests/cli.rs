//! The `ferry` binary: `check` reports every error with file:line:column,
//! `schema` prints a usable JSON Schema, `run` stops cleanly on SIGTERM after
//! finishing the request in flight.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Downstream;

fn ferry() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
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
    let out = ferry()
        .current_dir(d)
        .args(["check", "routes", "--connectors", "connectors"])
        .output()
        .unwrap();
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
    let out = ferry().current_dir(root).arg("check").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for ex in std::fs::read_dir(root.join("examples")).unwrap().flatten() {
        if !ex.path().join("routes").is_dir() {
            continue;
        }
        let out = ferry()
            .current_dir(ex.path())
            .arg("check")
            .output()
            .unwrap();
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
    let out = ferry().args(["schema"]).output().unwrap();
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
    let out = ferry().args(["schema", "connector"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("base_url"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_the_request_in_flight_then_exits_0() {
    let slow = Downstream::start(vec![200], Duration::from_millis(1500)).await;
    let dir = tempfile::tempdir().unwrap();
    let port = common::closed_port();
    write(
        dir.path(),
        "routes/slow.yaml",
        &format!(
            "from:\n  http: {{ path: /slow }}\nto:\n  - http: {{ url: \"{}\" }}\n",
            slow.url()
        ),
    );
    let mut child = ferry()
        .current_dir(dir.path())
        .args(["run", "--http-listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/slow");
    let end = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "ferry did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    ferry::install_crypto_provider();
    let req = tokio::spawn(async move {
        reqwest::Client::new()
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
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(
        req.await.unwrap().unwrap(),
        200,
        "in-flight request must complete"
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}
