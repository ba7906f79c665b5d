//! Test harness: runs the engine in-process on an ephemeral port with route
//! files in a temp folder, and a small programmable HTTP server standing in
//! for a downstream system. Every wait here has a deadline: `cargo test` has
//! none of its own, so a hung shutdown or a lost acknowledgement must fail the
//! test with what it waited for instead of hanging CI (see [`ChildGuard`],
//! [`within`], [`http_client`]).
#![allow(dead_code)] // each test file uses a different part of the harness

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
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
    /// Start the engine on the given route files (`(file name, yaml)`, borrowed
    /// or owned); `{dir}` in the yaml is replaced with the temp folder's path.
    pub async fn start(routes: &[(impl AsRef<str>, impl AsRef<str>)]) -> Ferry {
        Self::start_with_connectors(routes, &[]).await
    }

    pub async fn start_with_connectors(
        routes: &[(impl AsRef<str>, impl AsRef<str>)],
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
        routes: &[(impl AsRef<str>, impl AsRef<str>)],
        connectors: &[(&str, &str)],
    ) -> Result<Ferry, Vec<(String, String)>> {
        let dir = tempfile::tempdir().unwrap();
        let routes_dir = dir.path().join("routes");
        let conn_dir = dir.path().join("connectors");
        std::fs::create_dir_all(&routes_dir).unwrap();
        std::fs::create_dir_all(&conn_dir).unwrap();
        let d = dir.path().display().to_string();
        for (name, yaml) in routes {
            let yaml = yaml.as_ref().replace("{dir}", &d);
            std::fs::write(routes_dir.join(name.as_ref()), yaml).unwrap();
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
            within(
                "the engine to shut down after a failed start",
                Duration::from_secs(60),
                engine.shutdown(),
            )
            .await;
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

    /// POST `body` to `path` with [`http_client`]; no answer fails the test.
    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        http_client()
            .post(self.url(path))
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// Shut the engine down, failing the test if that takes longer than a
    /// minute (a shutdown regression must not hang the suite).
    pub async fn stop(&self) {
        within(
            "the in-process engine to shut down",
            Duration::from_secs(60),
            self.engine.shutdown(),
        )
        .await
    }
}

/// Start `route` (file `r.yaml`) with `connector` as connector `private`,
/// which must fail: the one route's reason, which must come within `limit`
/// (a start that hangs on a bad connection is a bug too).
pub async fn start_error(route: &str, connector: &str, limit: Duration) -> String {
    let started = Instant::now();
    let failed = Ferry::try_start(&[("r.yaml", route)], &[("private.yaml", connector)])
        .await
        .err()
        .expect("the route must not start");
    assert!(
        started.elapsed() < limit,
        "the error took {:?}",
        started.elapsed()
    );
    assert_eq!(failed.len(), 1, "{failed:?}");
    let e = failed[0].1.clone();
    eprintln!("start error, as a user sees it: {e}");
    e
}

/// How long any test HTTP request may take before it fails.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// An HTTP client whose requests fail after [`HTTP_TIMEOUT`] instead of
/// waiting forever on a Ferry that stopped answering.
pub fn http_client() -> reqwest::Client {
    http_client_timeout(HTTP_TIMEOUT)
}

/// Like [`http_client`], with requests that fail after `timeout` instead (a
/// test whose requests must give up sooner, to retry or to fail fast).
pub fn http_client_timeout(timeout: Duration) -> reqwest::Client {
    ferry::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("build the test HTTP client")
}

/// Run `body` with an overall deadline: on timeout the body is dropped (its
/// [`ChildGuard`]s kill their processes) and the test fails saying `what` it
/// was waiting for.
pub async fn within<T>(
    what: &str,
    deadline: Duration,
    body: impl std::future::Future<Output = T>,
) -> T {
    match tokio::time::timeout(deadline, body).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {deadline:?} waiting for {what}"),
    }
}

/// Wait up to `deadline` for `child` to exit. If it does not, SIGKILL it and
/// fail the test naming `what` it was waiting for.
pub fn wait_within(child: &mut Child, what: &str, deadline: Duration) -> ExitStatus {
    exited_within(child, what, deadline)
        .unwrap_or_else(|| panic!("{what}: still running {deadline:?} later, killed with SIGKILL"))
}

/// Wait up to `deadline` for `child` to exit; None, once SIGKILLed, if it did
/// not (the caller fails the test, with what it knows).
fn exited_within(child: &mut Child, what: &str, deadline: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + deadline;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Err(e) => panic!("{what}: cannot wait for process {}: {e}", child.id()),
        }
    }
}

/// Send `signal` (`TERM`, `HUP`, …) to `child` with the `kill` command.
pub fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {} failed", child.id());
}

/// SIGTERM `child`, then [`wait_within`] `deadline` for it to exit.
pub fn terminate(child: &mut Child, what: &str, deadline: Duration) -> ExitStatus {
    signal(child, "TERM");
    wait_within(child, &format!("{what} to exit after SIGTERM"), deadline)
}

/// A child process that cannot outlive its test: SIGKILLed on drop, stopped
/// with a deadline otherwise.
pub struct ChildGuard {
    child: Child,
    what: String,
    /// The process's log file, shown when it does not exit in time.
    log: Option<PathBuf>,
}

impl ChildGuard {
    /// `what` names the process in failure messages (`"ferry run"`).
    pub fn new(what: &str, child: Child) -> ChildGuard {
        ChildGuard {
            child,
            what: what.to_string(),
            log: None,
        }
    }

    /// Show the file `log` (the process's output) when a wait fails.
    pub fn with_log(mut self, log: PathBuf) -> ChildGuard {
        self.log = Some(log);
        self
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The process itself, e.g. to take its pipes.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    pub fn signal(&self, sig: &str) {
        signal(&self.child, sig)
    }

    /// SIGKILL the process and reap it (a crash, as the test wants it).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, wait up to `deadline`, then SIGKILL and fail the test.
    pub fn stop(&mut self, deadline: Duration) -> ExitStatus {
        self.signal("TERM");
        self.exit(&format!("{} to exit after SIGTERM", self.what), deadline)
    }

    /// Wait up to `deadline` for the process to exit on its own.
    pub fn wait(&mut self, deadline: Duration) -> ExitStatus {
        self.exit(&format!("{} to exit", self.what), deadline)
    }

    fn exit(&mut self, what: &str, deadline: Duration) -> ExitStatus {
        exited_within(&mut self.child, what, deadline).unwrap_or_else(|| {
            let log = match &self.log {
                Some(p) => format!(":\n{}", std::fs::read_to_string(p).unwrap_or_default()),
                None => String::new(),
            };
            panic!("{what}: still running {deadline:?} later, killed with SIGKILL{log}")
        })
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Run `cmd` to completion and capture its output; kill it and fail the test
/// if it takes longer than `deadline` (`Command::output` waits forever).
pub fn output_within(cmd: &mut Command, deadline: Duration) -> Output {
    let what = format!("{:?}", cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    // Read both pipes while waiting, so a chatty child cannot block on a full one.
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    let status = wait_within(&mut child, &what, deadline);
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
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

/// Files (not folders, not hidden) in `dir`, sorted; `[]` when `dir` does
/// not exist (so a wrong path looks like "nothing written": pair a negative
/// check with a positive case in the same folder).
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

/// The names of [`files_in`] `dir`: compare with the exact list expected, so
/// that a duplicate, a stray file or a wrong folder fails the check.
pub fn file_names_in(dir: &Path) -> Vec<String> {
    files_in(dir)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// The number `n` of a JSON body (what the tests send); fails the test
/// unless it has one.
pub fn n_of(json: impl AsRef<[u8]>) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(json.as_ref()).expect("a JSON body");
    v["n"].as_u64().expect("a number n")
}

/// The `n` of every JSON file in `dir` (one per delivery), in [`files_in`]
/// order; fails unless each file is named `{n}-…`.
pub fn numbered_files(dir: &Path) -> Vec<u64> {
    files_in(dir)
        .iter()
        .map(|path| {
            let n = n_of(std::fs::read(path).unwrap());
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            assert!(name.starts_with(&format!("{n}-")), "{name} holds n={n}");
            n
        })
        .collect()
}

/// Fail unless `ids` holds each of `expected` exactly once: a loss and a
/// duplicate both show, as `(id, times seen)`.
#[track_caller]
pub fn assert_each_once(
    what: &str,
    ids: impl IntoIterator<Item = u64>,
    expected: std::ops::Range<u64>,
) {
    let mut seen = std::collections::BTreeMap::new();
    for id in ids {
        *seen.entry(id).or_insert(0usize) += 1;
    }
    let wrong: Vec<(u64, usize)> = expected
        .clone()
        .map(|id| (id, seen.get(&id).copied().unwrap_or(0)))
        .filter(|(_, n)| *n != 1)
        .chain(
            seen.iter()
                .filter(|(id, _)| !expected.contains(id))
                .map(|(id, n)| (*id, *n)),
        )
        .collect();
    assert!(
        wrong.is_empty(),
        "{what}: not exactly once, as (id, times seen): {wrong:?}"
    );
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

/// Read exactly `n` bytes from `stream` within `deadline`, or fail the test
/// naming `what` was awaited.
pub async fn read_exactly(
    stream: &mut tokio::net::TcpStream,
    n: usize,
    what: &str,
    deadline: Duration,
) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; n];
    tokio::time::timeout(deadline, stream.read_exact(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("{what}: {n} bytes not read within {deadline:?}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    buf
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
