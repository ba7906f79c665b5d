//! The demo connectors: `timer` in-process, `stdin` → `stdout` through the real
//! binary with pipes (each line read, and the exit awaited, with a deadline).
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a panic is the report; helpers are shared by `mod common`

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

use common::{ChildGuard, Ferry, eventually, files_in};

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
    f.stop().await;
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
    let mut child = ChildGuard::new(
        "ferry run (stdin → stdout)",
        common::ferry_run(dir.path(), http, admin)
            .arg("--no-watch")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut stdin = child.child().stdin.take().unwrap();
    let stdout = child.child().stdout.take().unwrap();
    // Read stdout on a thread so that each line is awaited with a deadline.
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next_line = |what: &str| match lines.recv_timeout(Duration::from_secs(30)) {
        Ok(line) => line.unwrap(),
        Err(e) => panic!("no stdout line for {what} within 30 s ({e})"),
    };
    writeln!(stdin, "<note><to>Tove</to></note>").unwrap();
    writeln!(stdin, "<note><to>Jani</to></note>").unwrap();
    drop(stdin);
    assert_eq!(next_line("Tove"), "\"Tove\"");
    assert_eq!(next_line("Jani"), "\"Jani\"");
    assert_eq!(child.stop(Duration::from_secs(30)).code(), Some(0));
}
