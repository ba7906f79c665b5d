//! End-to-end: files dropped into a watched folder, converted, written out.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a panic is the report; helpers are shared by `mod common`

mod common;

use std::time::Duration;

use common::{Ferry, eventually, file_names_in, files_in};
use serde_json::Value;

const DROP_ROUTE: &str = r#"
from:
  file: { path: "{dir}/in", glob: "*.xml", settle: 100ms, poll_interval: 200ms }
steps:
  - xml_to_json: {}
to:
  - file: { path: "{dir}/out", name: "{header.file.name}.json" }
"#;

#[tokio::test]
async fn dropped_xml_file_becomes_json_and_moves_to_done() {
    let f = Ferry::start(&[("drop.yaml", DROP_ROUTE)]).await;
    std::fs::write(
        f.path("in/a.xml"),
        r#"<note lang="en"><to>Tove</to></note>"#,
    )
    .unwrap();
    let out = f.path("out/a.xml.json");
    eventually("a.xml.json", Duration::from_secs(10), || {
        out.exists().then_some(())
    })
    .await;
    let v: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(v["note"]["@lang"], "en");
    assert_eq!(v["note"]["to"], "Tove");
    let done = f.path("in/.done/a.xml");
    eventually("a.xml in .done", Duration::from_secs(5), || {
        done.exists().then_some(())
    })
    .await;
    assert!(!f.path("in/a.xml").exists());
    f.stop().await;
}

#[tokio::test]
async fn malformed_file_moves_to_error_with_a_reason() {
    let f = Ferry::start(&[("drop.yaml", DROP_ROUTE)]).await;
    std::fs::write(f.path("in/bad.xml"), "<a><b></a>").unwrap();
    let moved = f.path("in/.error/bad.xml");
    eventually("bad.xml in .error", Duration::from_secs(10), || {
        moved.exists().then_some(())
    })
    .await;
    // The reason is complete before the file appears in `.error/`.
    let text = std::fs::read_to_string(f.path("in/.error/bad.xml.reason")).unwrap();
    assert!(
        text.contains("xml_to_json") && text.ends_with('\n'),
        "{text:?}"
    );
    assert!(!f.path("in/bad.xml").exists());
    // A good file after it: the output folder then holds that one alone.
    std::fs::write(f.path("in/good.xml"), "<a>1</a>").unwrap();
    let good = f.path("out/good.xml.json");
    eventually("good.xml.json", Duration::from_secs(10), || {
        good.exists().then_some(())
    })
    .await;
    assert_eq!(file_names_in(&f.path("out")), ["good.xml.json"]);
    f.stop().await;
}

#[tokio::test]
async fn a_file_seen_in_error_always_has_its_whole_reason_beside_it() {
    let f = Ferry::start(&[("drop.yaml", DROP_ROUTE)]).await;
    const N: usize = 40;
    for i in 0..N {
        std::fs::write(f.path(&format!("in/bad{i:02}.xml")), "<a><b></a>").unwrap();
    }
    // Watch `.error/` closely: the moment a file shows, its reason must be whole.
    let mut checked = std::collections::HashSet::new();
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while checked.len() < N {
        assert!(
            std::time::Instant::now() < end,
            "only {} of {N} files reached .error in 30s",
            checked.len()
        );
        for p in files_in(&f.path("in/.error")) {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".reason") || !checked.insert(name.clone()) {
                continue;
            }
            let text = std::fs::read_to_string(f.path(&format!("in/.error/{name}.reason")))
                .unwrap_or_else(|e| panic!("{name} is in .error but its reason is not: {e}"));
            assert!(
                text.contains("xml_to_json") && text.ends_with('\n'),
                "{name}: reason incomplete: {text:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    f.stop().await;
}

#[tokio::test]
async fn temp_and_non_matching_files_are_left_alone_until_renamed() {
    let f = Ferry::start(&[("drop.yaml", DROP_ROUTE)]).await;
    std::fs::write(f.path("in/b.xml.tmp"), "<b>1</b>").unwrap();
    std::fs::write(f.path("in/readme.txt"), "not xml").unwrap();
    // A matching file written after them: once it is done, the watcher has
    // seen the other two, and the output folder is the one being checked.
    std::fs::write(f.path("in/c.xml"), "<c>1</c>").unwrap();
    let done = f.path("in/.done/c.xml");
    eventually("c.xml in .done", Duration::from_secs(10), || {
        done.exists().then_some(())
    })
    .await;
    assert_eq!(file_names_in(&f.path("out")), ["c.xml.json"]);
    std::fs::rename(f.path("in/b.xml.tmp"), f.path("in/b.xml")).unwrap();
    let out = f.path("out/b.xml.json");
    eventually("b.xml.json", Duration::from_secs(10), || {
        out.exists().then_some(())
    })
    .await;
    assert!(f.path("in/readme.txt").exists());
    assert_eq!(file_names_in(&f.path("out")), ["b.xml.json", "c.xml.json"]);
    f.stop().await;
}

#[tokio::test]
async fn many_files_are_each_delivered_once() {
    // Every delivery gets a file of its own, so a second one is visible.
    let route = DROP_ROUTE.replace("{header.file.name}.json", "{header.file.name}-{uuid}.json");
    let f = Ferry::start(&[("drop.yaml", &route)]).await;
    for i in 0..50 {
        std::fs::write(f.path(&format!("in/f{i:03}.xml")), format!("<n>{i}</n>")).unwrap();
    }
    eventually("50 in .done", Duration::from_secs(30), || {
        (files_in(&f.path("in/.done")).len() == 50).then_some(())
    })
    .await;
    // Shutdown finishes whatever is still in flight, so a late duplicate
    // is written before the count.
    f.stop().await;
    let mut sources: Vec<String> = file_names_in(&f.path("out"))
        .iter()
        .map(|n| {
            n.split_once(".xml-")
                .expect("<input>.xml-<uuid>.json")
                .0
                .to_string()
        })
        .collect();
    sources.sort();
    let expected: Vec<String> = (0..50).map(|i| format!("f{i:03}")).collect();
    assert_eq!(sources, expected, "each input delivered exactly once");
}

#[tokio::test]
async fn append_mode_writes_one_json_line_per_message() {
    let route = r#"
from:
  http: { path: /log }
to:
  - file: { path: "{dir}/out", name: "events-{date}.jsonl", append: true }
"#;
    let f = Ferry::start(&[("log.yaml", route)]).await;
    let c = common::http_client();
    for i in 0..20 {
        let r = c
            .post(f.url("/log"))
            .body(format!("{{\"i\": {i},\n \"x\": \"y\"}}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let files = files_in(&f.path("out"));
    assert_eq!(files.len(), 1);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let ids: Vec<u64> = text
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["x"], "y");
            v["i"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(
        ids,
        (0..20).collect::<Vec<u64>>(),
        "each message once, in order"
    );
    f.stop().await;
}

#[tokio::test]
async fn file_sink_name_from_a_header_cannot_escape_the_folder() {
    let route = r#"
from:
  http: { path: /w }
to:
  - file: { path: "{dir}/out", name: "{header.x-name}" }
"#;
    let f = Ferry::start(&[("w.yaml", route)]).await;
    let r = common::http_client()
        .post(f.url("/w"))
        .header("x-name", "../../etc/evil")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(f.path("out/.._.._etc_evil").is_file());
    assert!(!f.dir.path().join("etc").exists());
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_abandoned_at_the_drain_timeout_is_taken_by_the_next_version() {
    let stalled = common::Downstream::start(vec![200], Duration::from_secs(60)).await;
    let v1 = format!(
        "from:\n  file: {{ path: \"{{dir}}/in\", settle: 10ms, poll_interval: 100ms, retry_interval: 100ms }}\ndrain_timeout: 300ms\nto:\n  - http: {{ url: \"{}\", timeout: 5m }}\n",
        stalled.url()
    );
    let f = Ferry::start(&[("drop.yaml", &v1)]).await;
    std::fs::write(f.path("in/stuck.json"), "{}").unwrap();
    eventually(
        "the stalled sink got the file",
        Duration::from_secs(10),
        || (stalled.hits() == 1).then_some(()),
    )
    .await;
    // The new version writes files; the old one cannot finish within its drain
    // timeout, so its message is abandoned and the file must be free again.
    let v2 = "from:\n  file: { path: \"{dir}/in\", settle: 10ms, poll_interval: 100ms }\nto:\n  - file: { path: \"{dir}/out\", name: \"{header.file.name}\" }\n";
    std::fs::write(
        f.path("routes/drop.yaml"),
        v2.replace("{dir}", &f.dir.path().display().to_string()),
    )
    .unwrap();
    let report = f.engine.reload().await;
    assert_eq!(report.restarted, ["drop"], "{report:?}");
    let out = f.path("out/stuck.json");
    eventually(
        "the new version delivered the file",
        Duration::from_secs(10),
        || out.exists().then_some(()),
    )
    .await;
    f.stop().await;
}
