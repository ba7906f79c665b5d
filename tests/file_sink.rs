//! The file sink confirms a message only once its bytes are written: a reader
//! that looks right after the 200 finds the whole file (atomic mode) or the
//! whole line (append mode), and concurrent appends never tear or lose a line.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a panic is the report; helpers are shared by `mod common`

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Ferry, files_in};
use serde_json::Value;

/// A compact JSON body of about `size` bytes carrying `n`.
fn body(n: usize, size: usize) -> String {
    let pad = "x".repeat(size.saturating_sub(30));
    format!("{{\"n\":{n},\"pad\":\"{pad}\"}}")
}

/// A Ferry that appends each body posted to `/a` as a line of
/// `out/log.jsonl`, `concurrency` messages at a time.
async fn appending(concurrency: usize) -> Ferry {
    let route = format!(
        "from:\n  http: {{ path: /a }}\nconcurrency: {concurrency}\nto:\n  - file: {{ path: \"{{dir}}/out\", name: log.jsonl, append: true }}\n"
    );
    Ferry::start(&[("a.yaml", route)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_each_200_the_file_is_already_complete_in_place() {
    let route = r#"
from:
  http: { path: /w }
concurrency: 4
to:
  - file: { path: "{dir}/out", name: "{header.x-n}.json" }
"#;
    let f = Ferry::start(&[("w.yaml", route)]).await;
    let c = common::http_client();
    const N: usize = 2_500;
    for n in 0..N {
        let sent = body(n, 20 * 1024);
        let r = c
            .post(f.url("/w"))
            .header("x-n", n.to_string())
            .body(sent.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "request {n}");
        // Read at once: the 200 promises the file is complete in place.
        let path = f.path(&format!("out/{n}.json"));
        let got = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("request {n}: 200 but {} unreadable: {e}", path.display()));
        assert!(
            got == sent.as_bytes(),
            "request {n}: 200 but {} holds {} of {} bytes",
            path.display(),
            got.len(),
            sent.len()
        );
    }
    assert_eq!(files_in(&f.path("out")).len(), N);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_each_200_the_line_is_already_appended() {
    let f = appending(4).await;
    let c = common::http_client();
    let log = f.path("out/log.jsonl");
    const N: usize = 3_000;
    let mut expected_len = 0u64;
    for n in 0..N {
        let sent = body(n, 200);
        expected_len += sent.len() as u64 + 1;
        let r = c.post(f.url("/a")).body(sent).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {n}");
        let len = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        assert_eq!(
            len,
            expected_len,
            "request {n}: 200 but {} is {len} bytes, {expected_len} expected",
            log.display()
        );
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let ns: Vec<u64> = text.lines().map(common::n_of).collect();
    assert_eq!(ns, (0..N as u64).collect::<Vec<_>>());
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_from_many_connections_keep_every_line_whole() {
    let f = appending(32).await;
    const CONNS: usize = 32;
    const EACH: usize = 100;
    let mut tasks = Vec::new();
    for conn in 0..CONNS {
        // One client each: a connection of its own, not a shared pool.
        let c = common::http_client();
        let url = f.url("/a");
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                let n = conn * EACH + i;
                // Bodies from 1 to 16 KB: big writes are the ones that can tear.
                let r = c
                    .post(&url)
                    .body(body(n, 1024 * (1 + n % 16)))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "request {n}");
            }
        }));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    for t in tasks {
        tokio::time::timeout_at(deadline, t)
            .await
            .expect("clients did not finish within 120s")
            .unwrap();
    }
    let text = std::fs::read_to_string(f.path("out/log.jsonl")).unwrap();
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("line {} is torn ({e}): {:.80}…", i + 1, line));
        let n = v["n"].as_u64().unwrap();
        assert_eq!(
            v["pad"].as_str().unwrap().len(),
            1024 * (1 + n as usize % 16) - 30,
            "line {} (n={n}) is not the body sent",
            i + 1
        );
        *seen.entry(n).or_default() += 1;
    }
    let dups: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    assert!(dups.is_empty(), "written more than once: {dups:?}");
    assert_eq!(seen.len(), CONNS * EACH, "lines written");
    f.stop().await;
}

#[tokio::test]
async fn append_after_a_torn_last_line_starts_a_new_line() {
    let route = r#"
from:
  http: { path: /a }
to:
  - file: { path: "{dir}/out", name: log.jsonl, append: true }
"#;
    let f = Ferry::start(&[("a.yaml", route)]).await;
    // What a crash in the middle of an earlier run's write leaves behind.
    std::fs::create_dir_all(f.path("out")).unwrap();
    std::fs::write(f.path("out/log.jsonl"), "{\"n\":0}\n{\"n\":1,\"pa").unwrap();
    let c = common::http_client();
    for n in 2..4 {
        let r = c.post(f.url("/a")).body(body(n, 40)).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let text = std::fs::read_to_string(f.path("out/log.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[1], "{\"n\":1,\"pa", "the torn line stays as it was");
    for (l, n) in lines[2..].iter().zip(2..) {
        assert_eq!(serde_json::from_str::<Value>(l).unwrap()["n"], n);
    }
    f.stop().await;
}

/// The trace line index of the first syscall at or after `from` that matches.
fn find(lines: &[String], from: usize, what: &str, pred: impl Fn(&str) -> bool) -> usize {
    lines[from..]
        .iter()
        .position(|l| pred(l))
        .map(|i| from + i)
        .unwrap_or_else(|| {
            panic!(
                "no {what} after trace line {from}:\n{}",
                lines[from..].join("\n")
            )
        })
}

/// A trace line of `call(fd)`.
fn is_call(line: &str, call: &str, fd: &str) -> bool {
    line.contains(&format!(" {call}({fd})"))
}

/// strace splits a call that another thread interrupts into `… <unfinished
/// ...>` and `<... call resumed> …`; join them at the point the call finished.
fn join_unfinished(trace: &str) -> Vec<String> {
    let mut pending: HashMap<String, String> = HashMap::new();
    let mut lines = Vec::new();
    for line in trace.lines() {
        let pid = line.split_whitespace().next().unwrap_or("").to_string();
        if let Some(start) = line.strip_suffix(" <unfinished ...>") {
            pending.insert(pid, start.to_string());
        } else if let Some((_, rest)) = line.split_once(" resumed>") {
            let start = pending.remove(&pid).unwrap_or_default();
            lines.push(format!("{start}{rest}"));
        } else {
            lines.push(line.to_string());
        }
    }
    lines
}

/// The file descriptor an `openat(...) = FD` line returned.
fn fd_of(line: &str) -> String {
    line.rsplit("= ").next().unwrap().trim().to_string()
}

#[tokio::test]
async fn with_fsync_the_data_and_the_folder_are_synced_before_the_200() {
    // strace shows the order of the syscalls a real `ferry run` makes.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("routes")).unwrap();
    std::fs::write(
        dir.path().join("routes/w.yaml"),
        "from:\n  http: { path: /w }\nto:\n  - file: { path: out, name: \"{header.x-n}.json\", fsync: true }\n  - file: { path: log, name: all.jsonl, append: true, fsync: true }\n",
    )
    .unwrap();
    let (http, admin) = (common::closed_port(), common::closed_port());
    let mut ferry = common::ferry_run(dir.path(), http, admin);
    ferry.arg("--no-watch");
    let trace = dir.path().join("trace.txt");
    let mut strace = std::process::Command::new("strace");
    strace
        .args(["-f", "-qq", "-s", "40", "-o"])
        .arg(&trace)
        .args([
            "-e",
            "trace=openat,fsync,fdatasync,rename,renameat,renameat2,write,writev,sendto,sendmsg",
        ])
        .arg(ferry.get_program())
        .args(ferry.get_args())
        .current_dir(dir.path())
        .envs(ferry.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .stdout(std::process::Stdio::null());
    let child = strace
        .spawn()
        .expect("strace is needed for this test (Debian package strace)");
    let mut child = common::ChildGuard::new("ferry run under strace", child);
    // strace leaves its tracee running when it is killed, so ferry itself
    // gets a guard too: a failing test never leaves it behind.
    let ferry = FerryUnderStrace(ferry_pid_of(child.id()).await);
    let c = common::http_client();
    let end = std::time::Instant::now() + Duration::from_secs(60);
    while !c
        .get(format!("http://127.0.0.1:{admin}/ready"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            std::time::Instant::now() < end,
            "ferry under strace was not ready in 60s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = c
        .post(format!("http://127.0.0.1:{http}/w"))
        .header("x-n", "7")
        .body("{\"n\":7}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Stop ferry with SIGTERM; strace exits after it.
    ferry.signal("TERM");
    child.wait(Duration::from_secs(20));
    let lines = join_unfinished(&std::fs::read_to_string(&trace).unwrap());
    let ok = |l: &str| !l.contains("= -1");

    // Atomic mode: temp file written and synced, renamed, folder synced.
    let open_tmp = find(&lines, 0, "open of the temp file", |l| {
        l.contains("openat(") && l.contains("out/.") && l.contains(".tmp\"") && ok(l)
    });
    let tmp_fd = fd_of(&lines[open_tmp]);
    let sync_tmp = find(&lines, open_tmp, "fsync of the temp file", |l| {
        is_call(l, "fsync", &tmp_fd) && ok(l)
    });
    let rename = find(&lines, sync_tmp, "rename into place", |l| {
        l.contains("rename") && l.contains(".tmp\"") && l.contains("out/7.json\"") && ok(l)
    });
    let open_dir = find(&lines, rename, "open of the folder", |l| {
        l.contains("openat(") && l.contains("out\", O_RDONLY") && ok(l)
    });
    let dir_fd = fd_of(&lines[open_dir]);
    let sync_dir = find(&lines, open_dir, "fsync of the folder", |l| {
        is_call(l, "fsync", &dir_fd) && ok(l)
    });
    // Append mode: the line written, then synced.
    let open_log = find(&lines, 0, "open of the log", |l| {
        l.contains("openat(") && l.contains("log/all.jsonl\"") && ok(l)
    });
    let log_fd = fd_of(&lines[open_log]);
    let write_log = find(&lines, open_log, "write of the line", |l| {
        l.contains(&format!("write({log_fd}, \"{{\\\"n\\\":7}}\\n\"")) && ok(l)
    });
    let sync_log = find(&lines, write_log, "fdatasync of the log", |l| {
        is_call(l, "fdatasync", &log_fd) && ok(l)
    });
    // The first 200 after the sinks began is the reply to the POST (earlier
    // ones answered the readiness probe).
    let reply = find(&lines, open_tmp.min(open_log), "the 200 reply", |l| {
        l.contains("HTTP/1.1 200")
    });
    assert!(
        reply > sync_dir && reply > sync_log,
        "the 200 (trace line {reply}) went out before the folder fsync ({sync_dir}) or the log fdatasync ({sync_log})"
    );
}

/// The pid of strace's child (ferry), once strace has started it.
async fn ferry_pid_of(strace: u32) -> u32 {
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let children = std::fs::read_to_string(format!("/proc/{strace}/task/{strace}/children"))
            .unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            return pid.parse().unwrap();
        }
        assert!(
            std::time::Instant::now() < end,
            "strace did not start ferry within 10s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// ferry under strace, SIGKILLed on drop (a no-op once it has exited).
struct FerryUnderStrace(u32);

impl FerryUnderStrace {
    fn signal(&self, sig: &str) {
        let sent = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.0.to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{sig} {} failed", self.0);
    }
}

impl Drop for FerryUnderStrace {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
