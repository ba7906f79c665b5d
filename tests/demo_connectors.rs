//! The demo connectors: `timer` in-process, `stdin` → `stdout` through the real
//! binary with pipes.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Ferry, eventually, files_in};

#[tokio::test]
async fn timer_emits_count_messages_with_its_headers() {
    let route = r#"
from:
  timer: { interval: 20ms, count: 3, body: '{"ping": true}' }
to:
  - file: { path: "{dir}/out", name: "tick-{header.timer.count}.json" }
"#;
    let f = Ferry::start(&[("tick.yaml", route)]).await;
    let files = eventually("3 ticks", Duration::from_secs(5), || {
        let v = files_in(&f.path("out"));
        (v.len() == 3).then_some(v)
    })
    .await;
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["tick-1.json", "tick-2.json", "tick-3.json"]);
    assert_eq!(
        std::fs::read_to_string(&files[0]).unwrap(),
        r#"{"ping": true}"#
    );
    // `count` stops it: no fourth tick.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(files_in(&f.path("out")).len(), 3);
    f.engine.shutdown().await;
}

#[test]
fn stdin_lines_come_out_converted_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("routes")).unwrap();
    std::fs::write(
        dir.path().join("routes/pipe.yaml"),
        "from:\n  stdin: {}\nsteps:\n  - xml_to_json: {}\n  - jsonpath: \"$.note.to\"\nto:\n  - stdout: {}\n",
    )
    .unwrap();
    let (http, admin) = (common::closed_port(), common::closed_port());
    let mut child = common::ferry_run(dir.path(), http, admin)
        .arg("--no-watch")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill the child if an assertion fails, so no process outlives the test.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut child = Reap(child);
    writeln!(stdin, "<note><to>Tove</to></note>").unwrap();
    writeln!(stdin, "<note><to>Jani</to></note>").unwrap();
    drop(stdin);
    let mut lines = BufReader::new(stdout).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "\"Tove\"");
    assert_eq!(lines.next().unwrap().unwrap(), "\"Jani\"");
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.0.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(child.0.wait().unwrap().code(), Some(0));
}
