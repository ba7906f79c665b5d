//! Hot reload against a real `ferry run` process: route files rewritten under
//! load, every way editors and Kubernetes save files, invalid and half-written
//! files, removed routes.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a panic is the report; helpers are shared by `mod common`

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::services::STOP_DEADLINE;
use common::{ChildGuard, Downstream, closed_port, http_client};
use serde_json::Value;

struct Proc {
    child: ChildGuard,
    dir: tempfile::TempDir,
    http: u16,
    admin: u16,
}

impl Proc {
    /// Start `ferry run` in a temp folder holding `routes` (name, yaml).
    fn start(routes: &[(&str, &str)]) -> Proc {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("routes")).unwrap();
        for (name, yaml) in routes {
            write_route(&dir.path().join("routes").join(name), yaml, dir.path());
        }
        Self::start_in(dir)
    }

    fn start_in(dir: tempfile::TempDir) -> Proc {
        let (http, admin) = (closed_port(), closed_port());
        let child = ChildGuard::new(
            "ferry run",
            common::ferry_run(dir.path(), http, admin).spawn().unwrap(),
        );
        let p = Proc {
            child,
            dir,
            http,
            admin,
        };
        let end = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", admin)).is_err() {
            assert!(Instant::now() < end, "ferry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    fn routes_dir(&self) -> PathBuf {
        self.dir.path().join("routes")
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    async fn status(&self) -> Value {
        http_client()
            .get(format!("http://127.0.0.1:{}/admin/routes", self.admin))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn started_at(&self, id: &str) -> String {
        let s = self.status().await;
        s["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .map(|r| r["started_at"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("route {id} not running: {s}"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A clean stop, bounded; while a failed test unwinds, the guard's
        // SIGKILL is enough.
        if !std::thread::panicking() {
            self.child.stop(STOP_DEADLINE);
        }
    }
}

fn write_route(path: &Path, yaml: &str, dir: &Path) {
    std::fs::write(path, yaml.replace("{dir}", &dir.display().to_string())).unwrap();
}

/// A route answering `{"version": V}`.
fn versioned(path: &str, version: &str) -> String {
    format!(
        "from:\n  http: {{ path: {path} }}\nsteps:\n  - script: 'body = #{{ version: \"{version}\" }};'\n"
    )
}

async fn version_of(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let r = client
        .post(url)
        .body("{}")
        .send()
        .await
        .map_err(|e| format!("request error: {e}"))?;
    let status = r.status();
    let text = r.text().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{status}: {text}"));
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    Ok(v["version"].as_str().unwrap_or_default().to_string())
}

async fn wait_for_version(client: &reqwest::Client, url: &str, want: &str) -> Duration {
    let start = Instant::now();
    loop {
        if version_of(client, url).await.as_deref() == Ok(want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{url} never served version {want}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_rewrites_under_load_lose_no_request_and_leave_other_routes_alone() {
    common::within(
        "fifty route rewrites under load",
        Duration::from_secs(300),
        fifty_rewrites_under_load_lose_no_request_and_leave_other_routes_alone_steps(),
    )
    .await
}

async fn fifty_rewrites_under_load_lose_no_request_and_leave_other_routes_alone_steps() {
    ferry::install_crypto_provider();
    let p = Proc::start(&[
        ("swap.yaml", &versioned("/swap", "v0")),
        ("other.yaml", &versioned("/other", "o")),
    ]);
    let client = http_client();
    wait_for_version(&client, &p.url("/swap"), "v0").await;
    let other_started = p.started_at("other").await;

    // Written version index; responses must come from the current or previous one.
    let current = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for worker in 0..4 {
        let (client, current, stop) = (client.clone(), current.clone(), stop.clone());
        let url = p.url(if worker == 3 { "/other" } else { "/swap" });
        load.push(tokio::spawn(async move {
            let (mut ok, mut failures) = (0usize, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                match version_of(&client, &url).await {
                    Ok(v) if v == "o" => ok += 1,
                    Ok(v) => {
                        let n: usize = v.trim_start_matches('v').parse().unwrap();
                        let now = current.load(Ordering::SeqCst);
                        if n + 1 < now || n > now {
                            failures.push(format!("stale version {v} while v{now} is written"));
                        }
                        ok += 1;
                    }
                    Err(e) => failures.push(e),
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (ok, failures)
        }));
    }

    let mut latencies = Vec::new();
    let started = Instant::now();
    for i in 1..=50 {
        let path = p.routes_dir().join("swap.yaml");
        let yaml = versioned("/swap", &format!("v{i}"));
        if i % 2 == 0 {
            // Editor style: write a temp file, rename it over the route.
            let tmp = p.routes_dir().join(".swap.yaml.tmp");
            std::fs::write(&tmp, &yaml).unwrap();
            current.store(i, Ordering::SeqCst);
            std::fs::rename(&tmp, &path).unwrap();
        } else {
            current.store(i, Ordering::SeqCst);
            std::fs::write(&path, &yaml).unwrap();
        }
        latencies.push(wait_for_version(&client, &p.url("/swap"), &format!("v{i}")).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    // After the last write settles, only the newest version answers.
    for _ in 0..50 {
        assert_eq!(version_of(&client, &p.url("/swap")).await.unwrap(), "v50");
    }
    stop.store(true, Ordering::SeqCst);
    let (mut total, mut failures) = (0, Vec::new());
    for l in load {
        let (ok, f) = l.await.unwrap();
        total += ok;
        failures.extend(f);
    }
    let max = *latencies.iter().max().unwrap();
    let med = median(&mut latencies);
    eprintln!(
        "reload figures: 50 reloads, latency write→new version serving median {:.0} ms, max {:.0} ms; {total} requests in {:.1} s ({:.0} req/s), {} failed",
        med.as_secs_f64() * 1000.0,
        max.as_secs_f64() * 1000.0,
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(total > 1000, "load too light: {total}");
    assert_eq!(
        p.started_at("other").await,
        other_started,
        "untouched route was restarted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn files_dropped_during_twenty_reloads_are_each_delivered_once() {
    common::within(
        "400 dropped files through twenty reloads",
        Duration::from_secs(300),
        files_dropped_during_twenty_reloads_are_each_delivered_once_steps(),
    )
    .await
}

async fn files_dropped_during_twenty_reloads_are_each_delivered_once_steps() {
    let route = |n: usize| {
        format!(
            "from:\n  file: {{ path: \"{{dir}}/in\", glob: \"*.json\", settle: 50ms, poll_interval: 100ms }}\nsteps:\n  - log: \"version {n}\"\nto:\n  - file: {{ path: \"{{dir}}/out\", name: all.jsonl, append: true }}\n"
        )
    };
    let p = Proc::start(&[("drop.yaml", &route(0))]);
    let inbox = p.dir.path().join("in");
    let end = Instant::now() + Duration::from_secs(10);
    while !inbox.is_dir() {
        assert!(
            Instant::now() < end,
            "the file source never created {inbox:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = 400;
    let writer = {
        let inbox = inbox.clone();
        tokio::task::spawn_blocking(move || {
            for i in 0..total {
                let tmp = inbox.join(format!(".{i}.tmp"));
                std::fs::write(&tmp, format!("{{\"n\":{i}}}")).unwrap();
                std::fs::rename(&tmp, inbox.join(format!("{i:04}.json"))).unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    for n in 1..=20 {
        write_route(&p.routes_dir().join("drop.yaml"), &route(n), p.dir.path());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    writer.await.unwrap();
    let out = p.dir.path().join("out/all.jsonl");
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let lines = std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .count();
        if lines >= total || Instant::now() > end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let any duplicate show up before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = std::fs::read_to_string(&out).unwrap();
    let mut seen: Vec<u64> = text.lines().map(common::n_of).collect();
    let lines = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), total, "missing messages");
    assert_eq!(lines, total, "{} duplicates", lines - total);
    let status = p.status().await;
    assert_eq!(
        status["last_reload"]["errors"].as_array().unwrap().len(),
        0,
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_save_pattern_is_picked_up_and_bad_files_never_take_a_route_down() {
    common::within(
        "every save pattern to be picked up",
        Duration::from_secs(300),
        every_save_pattern_is_picked_up_and_bad_files_never_take_a_route_down_steps(),
    )
    .await
}

async fn every_save_pattern_is_picked_up_and_bad_files_never_take_a_route_down_steps() {
    ferry::install_crypto_provider();
    let p = Proc::start(&[("r.yaml", &versioned("/r", "start"))]);
    let c = http_client();
    let url = p.url("/r");
    let file = p.routes_dir().join("r.yaml");
    wait_for_version(&c, &url, "start").await;

    // Atomic rename (vim, sed -i).
    let tmp = p.routes_dir().join("r.yaml.tmp");
    std::fs::write(&tmp, versioned("/r", "renamed")).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    wait_for_version(&c, &url, "renamed").await;

    // Truncate, then write in chunks.
    let text = versioned("/r", "chunked");
    let (a, b) = text.split_at(text.len() / 2);
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&file).unwrap();
        f.write_all(a.as_bytes()).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(60));
        f.write_all(b.as_bytes()).unwrap();
    }
    wait_for_version(&c, &url, "chunked").await;

    // Half-written for a long time: the running version stays.
    let text = versioned("/r", "half");
    std::fs::write(&file, &text[..text.len() / 2]).unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(version_of(&c, &url).await.unwrap(), "chunked");
    std::fs::write(&file, &text).unwrap();
    wait_for_version(&c, &url, "half").await;

    // Invalid (unknown key): old version keeps serving, error shown with location.
    std::fs::write(&file, format!("{}stpes: []\n", versioned("/r", "invalid"))).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    let err = loop {
        let s = p.status().await;
        if let Some(e) = s["routes"][0]["last_reload_error"].as_str() {
            break e.to_string();
        }
        assert!(Instant::now() < end, "error never shown: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(err.contains("r.yaml:5:1: unknown field `stpes`"), "{err}");
    assert_eq!(version_of(&c, &url).await.unwrap(), "half");

    // Delete, then create.
    std::fs::remove_file(&file).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(&file, versioned("/r", "recreated")).unwrap();
    wait_for_version(&c, &url, "recreated").await;

    // A new file starts a new route; removing it stops it (404).
    let new = p.routes_dir().join("new.yaml");
    std::fs::write(&new, versioned("/new", "n1")).unwrap();
    wait_for_version(&c, &p.url("/new"), "n1").await;
    std::fs::remove_file(&new).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.post(p.url("/new")).body("{}").send().await.unwrap();
        if r.status() == 404 {
            break;
        }
        assert!(Instant::now() < end, "removed route still answers");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(version_of(&c, &url).await.unwrap(), "recreated");

    // SIGHUP forces a reload even without a change.
    let before = p.status().await["last_reload"]["at"].clone();
    p.child.signal("HUP");
    let end = Instant::now() + Duration::from_secs(10);
    while p.status().await["last_reload"]["at"] == before {
        assert!(Instant::now() < end, "SIGHUP did not reload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The admin call reloads and reports.
    let r = c
        .post(format!("http://127.0.0.1:{}/admin/reload", p.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["unchanged"], serde_json::json!(["r"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn configmap_style_symlink_swap_is_picked_up() {
    common::within(
        "the ConfigMap symlink swap to be picked up",
        Duration::from_secs(120),
        configmap_style_symlink_swap_is_picked_up_steps(),
    )
    .await
}

async fn configmap_style_symlink_swap_is_picked_up_steps() {
    ferry::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes");
    std::fs::create_dir_all(routes.join("..2026_v1")).unwrap();
    std::fs::write(routes.join("..2026_v1/cm.yaml"), versioned("/cm", "cm1")).unwrap();
    std::os::unix::fs::symlink("..2026_v1", routes.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/cm.yaml", routes.join("cm.yaml")).unwrap();
    let p = Proc::start_in(dir);
    let c = http_client();
    wait_for_version(&c, &p.url("/cm"), "cm1").await;

    // Kubernetes' update: new folder, new `..data_tmp` link, renamed over `..data`.
    let routes = p.routes_dir();
    std::fs::create_dir_all(routes.join("..2026_v2")).unwrap();
    std::fs::write(routes.join("..2026_v2/cm.yaml"), versioned("/cm", "cm2")).unwrap();
    std::os::unix::fs::symlink("..2026_v2", routes.join("..data_tmp")).unwrap();
    std::fs::rename(routes.join("..data_tmp"), routes.join("..data")).unwrap();
    std::fs::remove_dir_all(routes.join("..2026_v1")).unwrap();
    wait_for_version(&c, &p.url("/cm"), "cm2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removing_a_route_finishes_its_in_flight_request_then_404() {
    common::within(
        "the removed route to finish its request, then 404",
        Duration::from_secs(120),
        removing_a_route_finishes_its_in_flight_request_then_404_steps(),
    )
    .await
}

async fn removing_a_route_finishes_its_in_flight_request_then_404_steps() {
    ferry::install_crypto_provider();
    let slow = Downstream::start(vec![200], Duration::from_millis(1500)).await;
    let p = Proc::start(&[(
        "slow.yaml",
        &format!(
            "from:\n  http: {{ path: /slow }}\nto:\n  - http: {{ url: \"{}\" }}\n",
            slow.url()
        ),
    )]);
    let c = http_client();
    let url = p.url("/slow");
    let req = tokio::spawn({
        let (c, url) = (c.clone(), url.clone());
        async move {
            c.post(url)
                .body("{}")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let end = Instant::now() + Duration::from_secs(10);
    while slow.hits() == 0 {
        assert!(
            Instant::now() < end,
            "the request never reached the downstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    std::fs::remove_file(p.routes_dir().join("slow.yaml")).unwrap();
    assert_eq!(req.await.unwrap(), 200, "in-flight request must finish");
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        if c.post(&url).body("{}").send().await.unwrap().status() == 404 {
            break;
        }
        assert!(Instant::now() < end, "removed route still answers");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_version_that_cannot_start_rolls_back_to_the_old_one() {
    common::within(
        "the failed new version to roll back",
        Duration::from_secs(120),
        a_new_version_that_cannot_start_rolls_back_to_the_old_one_steps(),
    )
    .await
}

async fn a_new_version_that_cannot_start_rolls_back_to_the_old_one_steps() {
    ferry::install_crypto_provider();
    let p = Proc::start(&[("r.yaml", &versioned("/r", "v1"))]);
    let c = http_client();
    wait_for_version(&c, &p.url("/r"), "v1").await;
    // The new version wants a port another program holds.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    std::fs::write(
        p.routes_dir().join("r.yaml"),
        format!(
            "from:\n  http: {{ path: /r, listen: \"127.0.0.1:{port}\" }}\nsteps:\n  - script: 'body = #{{ version: \"v2\" }};'\n"
        ),
    )
    .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    let err = loop {
        let s = p.status().await;
        if let Some(e) = s["routes"][0]["last_reload_error"].as_str() {
            break e.to_string();
        }
        assert!(Instant::now() < end, "start failure never shown: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        err.contains("failed to start") && err.contains(&port.to_string()),
        "{err}"
    );
    assert_eq!(version_of(&c, &p.url("/r")).await.unwrap(), "v1");
    let s = p.status().await;
    assert_eq!(
        s["last_reload"]["kept_old_version"],
        serde_json::json!(["r"]),
        "{s}"
    );
}
