//! Test harness: runs the engine in-process on an ephemeral port with route
//! files in a temp folder, and a small programmable HTTP server standing in
//! for a downstream system.
#![allow(dead_code)] // each test file uses a different part of the harness

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub mod private;
pub mod services;

use ferry::config::Defaults;
use ferry::engine::{ConfigDirs, Engine};

pub struct Ferry {
    pub engine: Engine,
    pub dir: tempfile::TempDir,
    pub addr: Option<SocketAddr>,
}

impl Ferry {
    /// Start the engine on the given route files (`(file name, yaml)`); `{dir}`
    /// in the yaml is replaced with the temp folder's path.
    pub async fn start(routes: &[(&str, &str)]) -> Ferry {
        Self::start_with_connectors(routes, &[]).await
    }

    pub async fn start_with_connectors(
        routes: &[(&str, &str)],
        connectors: &[(&str, &str)],
    ) -> Ferry {
        match Self::try_start(routes, connectors).await {
            Ok(f) => f,
            Err(failed) => panic!("routes failed to start: {failed:?}"),
        }
    }

    /// Like [`Ferry::start_with_connectors`], but routes that fail to start
    /// are returned as `(route id, reason)` instead of failing the test.
    pub async fn try_start(
        routes: &[(&str, &str)],
        connectors: &[(&str, &str)],
    ) -> Result<Ferry, Vec<(String, String)>> {
        let dir = tempfile::tempdir().unwrap();
        let routes_dir = dir.path().join("routes");
        let conn_dir = dir.path().join("connectors");
        std::fs::create_dir_all(&routes_dir).unwrap();
        std::fs::create_dir_all(&conn_dir).unwrap();
        let d = dir.path().display().to_string();
        for (name, yaml) in routes {
            std::fs::write(routes_dir.join(name), yaml.replace("{dir}", &d)).unwrap();
        }
        for (name, yaml) in connectors {
            std::fs::write(conn_dir.join(name), yaml.replace("{dir}", &d)).unwrap();
        }
        let dirs = ConfigDirs {
            routes: routes_dir,
            connectors: conn_dir,
            defaults: Defaults {
                http_listen: "127.0.0.1:0".parse().unwrap(),
                data_dir: dir.path().join("data"),
                ..Defaults::default()
            },
        };
        let engine = Engine::with_dirs(dirs);
        let report = engine.reload().await;
        if !report.ok() {
            // Configuration errors fail the test; start failures are the caller's to check.
            assert_eq!(
                report.errors.len(),
                report.failed_to_start.len(),
                "route errors: {:?}",
                report.errors
            );
            engine.shutdown().await;
            return Err(report
                .failed_to_start
                .into_iter()
                .map(|f| (f.route, f.error))
                .collect());
        }
        let addr = engine.resources.http.bound_addrs().await.first().copied();
        Ok(Ferry { engine, dir, addr })
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr.expect("no http listener"), path)
    }
}

/// `ferry run` in `dir` on the given loopback ports (logs at `warn` to the
/// test's stderr, stdout discarded); add arguments and spawn it.
pub fn ferry_run(dir: &Path, http: u16, admin: u16) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.current_dir(dir)
        .args(["run", "--http-listen", &format!("127.0.0.1:{http}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .env("FERRY_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit());
    cmd
}

/// A path in the shared test corpus (`../shared/corpus`); its absence is a
/// failure, not a skip.
pub fn corpus(rel: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/corpus")
        .join(rel);
    assert!(
        p.exists(),
        "corpus path {} is missing: the tests need ../shared/corpus beside the repo (see its README)",
        p.display()
    );
    p
}

/// Files (not folders, not hidden) in `dir`, sorted.
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.')
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Poll `f` until it returns Some or the deadline passes.
pub async fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > end {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

type DownstreamState = (
    Arc<AtomicUsize>,
    Arc<std::sync::Mutex<Vec<(String, String)>>>,
    Arc<Vec<u16>>,
);

/// A downstream HTTP service: answers each request with the next status from
/// `statuses` (the last one repeats), after `delay`; records the bodies.
#[derive(Clone)]
pub struct Downstream {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub bodies: Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl Downstream {
    pub async fn start(statuses: Vec<u16>, delay: Duration) -> Downstream {
        use axum::extract::State;
        use axum::http::{HeaderMap, StatusCode};
        let hits = Arc::new(AtomicUsize::new(0));
        let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
        let state = (hits.clone(), bodies.clone(), Arc::new(statuses));
        let app = axum::Router::new()
            .fallback(
                move |State((hits, bodies, statuses)): State<DownstreamState>,
                      headers: HeaderMap,
                      body: String| async move {
                    let n = hits.fetch_add(1, Ordering::SeqCst);
                    let ct = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    bodies.lock().unwrap().push((ct, body));
                    tokio::time::sleep(delay).await;
                    let code = statuses.get(n).or(statuses.last()).copied().unwrap_or(200);
                    (StatusCode::from_u16(code).unwrap(), "downstream says hi")
                },
            )
            .with_state(state);
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(tcp, app).await.unwrap() });
        Downstream { addr, hits, bodies }
    }

    pub fn url(&self) -> String {
        format!("http://{}/in", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A loopback port with nothing listening on it.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A downstream HTTP service for failure tests: reads `n` from each JSON body;
/// answers 500 the first time it sees an `n` that `fail_first` picks, 400
/// every time for an `n` that `always_fail` picks, else 200 and records `n`.
#[derive(Clone)]
pub struct Flaky {
    pub addr: SocketAddr,
    /// `n` of every accepted (200) request, in arrival order.
    pub accepted: Arc<std::sync::Mutex<Vec<u64>>>,
    pub refused: Arc<AtomicUsize>,
}

type FlakyState = (
    Arc<std::sync::Mutex<Vec<u64>>>,
    Arc<std::sync::Mutex<std::collections::HashSet<u64>>>,
    Arc<AtomicUsize>,
    (fn(u64) -> bool, fn(u64) -> bool),
    Duration,
);

impl Flaky {
    pub async fn start(fail_first: fn(u64) -> bool, always_fail: fn(u64) -> bool) -> Flaky {
        Self::start_with_delay(fail_first, always_fail, Duration::ZERO).await
    }

    /// Like [`Flaky::start`], answering each request after `delay` (a slow
    /// downstream keeps a stream going long enough to disturb it).
    pub async fn start_with_delay(
        fail_first: fn(u64) -> bool,
        always_fail: fn(u64) -> bool,
        delay: Duration,
    ) -> Flaky {
        use axum::extract::State;
        use axum::http::StatusCode;
        let accepted = Arc::new(std::sync::Mutex::new(Vec::new()));
        let refused = Arc::new(AtomicUsize::new(0));
        let state: FlakyState = (
            accepted.clone(),
            Arc::new(std::sync::Mutex::new(std::collections::HashSet::new())),
            refused.clone(),
            (fail_first, always_fail),
            delay,
        );
        let app = axum::Router::new()
            .fallback(
                |State((accepted, seen, refused, (fail_first, always_fail), delay)): State<
                    FlakyState,
                >,
                 body: String| async move {
                    tokio::time::sleep(delay).await;
                    let n = serde_json::from_str::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["n"].as_u64());
                    let Some(n) = n else {
                        return StatusCode::BAD_REQUEST;
                    };
                    if always_fail(n) {
                        refused.fetch_add(1, Ordering::SeqCst);
                        return StatusCode::BAD_REQUEST;
                    }
                    if fail_first(n) && seen.lock().unwrap().insert(n) {
                        refused.fetch_add(1, Ordering::SeqCst);
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    accepted.lock().unwrap().push(n);
                    StatusCode::OK
                },
            )
            .with_state(state);
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(tcp, app).await.unwrap() });
        Flaky {
            addr,
            accepted,
            refused,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/in", self.addr)
    }

    pub fn accepted(&self) -> Vec<u64> {
        self.accepted.lock().unwrap().clone()
    }

    /// Wait until `n` distinct values were accepted; returns them sorted.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<u64> {
        eventually(&format!("{n} accepted requests"), timeout, || {
            let mut v = self.accepted();
            v.sort();
            v.dedup();
            (v.len() >= n).then_some(v)
        })
        .await
    }
}
