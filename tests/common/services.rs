//! Real services on loopback for the broker tests: a reachability check that
//! skips (loudly) or fails (with `FERRY_REQUIRE_SERVICES=1`), unique names so
//! tests can run concurrently and repeatedly, and a `ferry run` child process
//! for kill -9 tests.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const AMQP: (&str, &str) = ("RabbitMQ", "127.0.0.1:5672");
pub const NATS: (&str, &str) = ("NATS", "127.0.0.1:4222");
pub const REDIS: (&str, &str) = ("Redis", "127.0.0.1:6379");
pub const POSTGRES: (&str, &str) = ("PostgreSQL", "127.0.0.1:5432");
pub const MQTT: (&str, &str) = ("Mosquitto", "127.0.0.1:1883");

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const NATS_URL: &str = "nats://127.0.0.1:4222";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379/0";
pub const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
pub const MQTT_URL: &str = "mqtt://127.0.0.1:1883";

/// How long a process may take to exit after SIGTERM before it is killed and
/// the test fails.
pub const STOP_DEADLINE: Duration = Duration::from_secs(30);

pub fn reachable(addr: &str) -> bool {
    let addr: SocketAddr = addr.parse().expect("socket address");
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

/// Whether the service is up. If it is not: with `FERRY_REQUIRE_SERVICES=1`
/// the test fails with a clear message; otherwise it prints `SKIPPED: …` to
/// stderr and the caller returns (never a silent pass).
pub fn available((name, addr): (&str, &str)) -> bool {
    if reachable(addr) {
        return true;
    }
    if std::env::var("FERRY_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!(
            "{name} not reachable at {addr}, and FERRY_REQUIRE_SERVICES=1 says it must be (start it: see .ci/run)"
        );
    }
    eprintln!("SKIPPED: {name} not reachable at {addr}");
    false
}

/// `prefix-<random>`: a queue/stream/subject/table name no other test run uses.
pub fn unique(prefix: &str) -> String {
    // The tail of a UUIDv7 is random; its head is the clock.
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("{prefix}_{}", &id[id.len() - 12..])
}

/// A `ferry run` child process in a folder of its own.
pub struct FerryProcess {
    child: super::ChildGuard,
    pub admin: u16,
}

impl FerryProcess {
    /// Start `ferry run` in `dir` (which holds `routes/` and `connectors/`);
    /// returns once its admin endpoint answers.
    pub fn start(dir: &Path) -> FerryProcess {
        let http = super::closed_port();
        let admin = super::closed_port();
        let child = super::ferry_run(dir, http, admin)
            .arg("--no-watch")
            .spawn()
            .expect("spawn ferry");
        let mut p = FerryProcess {
            child: super::ChildGuard::new("ferry run", child),
            admin,
        };
        let end = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", admin)).is_err() {
            if let Ok(Some(status)) = p.child.child().try_wait() {
                panic!("ferry run exited ({status}) before its admin port answered");
            }
            assert!(
                Instant::now() < end,
                "ferry run: admin port {admin} not answering after 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    pub fn kill9(&mut self) {
        self.child.kill();
    }

    /// SIGTERM; fails the test if Ferry has not exited 30 s later.
    pub fn terminate(&mut self) {
        self.child.stop(STOP_DEADLINE);
    }
}

/// Poll `ready` until it holds; fails the test with `log()` if `child`
/// (named `name`) exits first or is not ready after `timeout`.
pub(super) fn wait_ready(
    child: &mut Child,
    name: &str,
    timeout: Duration,
    log: impl Fn() -> String,
    mut ready: impl FnMut() -> bool,
) {
    let end = Instant::now() + timeout;
    while !ready() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{name} exited ({status}):\n{}", log());
        }
        assert!(
            Instant::now() < end,
            "{name} not ready after {timeout:?}:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A connection to the shared Redis ([`REDIS_URL`]).
#[cfg(feature = "redis")]
pub async fn redis_con() -> redis::aio::MultiplexedConnection {
    redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis")
}

/// Write route and connector files (`(relative path, text)`) into `dir`.
pub fn write_files(dir: &Path, files: &[(&str, String)]) {
    for (name, text) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

/// Poll an async check until it returns Some, or fail after `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > end {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `program` can be run. If not: fails with
/// `FERRY_REQUIRE_SERVICES=1`, else prints `SKIPPED: …` (the caller returns).
pub fn installed(program: &str) -> bool {
    if let Ok(mut child) = Command::new(program)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        super::wait_within(
            &mut child,
            &format!("`{program} --help`"),
            Duration::from_secs(10),
        );
        return true;
    }
    if std::env::var("FERRY_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{program} is not installed, and FERRY_REQUIRE_SERVICES=1 says it must be");
    }
    eprintln!("SKIPPED: {program} not installed");
    false
}

/// A broker process of our own (from the machine's binaries) on a free
/// port, with a data folder of its own: for restarts, credentials and TLS
/// without touching the shared services. Its output goes to `server.log` in
/// that folder, which [`Private::log`] returns for failure messages.
pub struct Private {
    program: &'static str,
    args: Vec<String>,
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Private {
    /// Start `program` with the arguments `args(port, folder)` gives (it may
    /// write config files into the folder first); None when the program is
    /// not installed (the caller skips). Returns once the port accepts.
    pub fn start(
        program: &'static str,
        args: impl FnOnce(u16, &Path) -> Vec<String>,
    ) -> Option<Private> {
        if !installed(program) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = super::closed_port();
        let mut p = Private {
            program,
            args: args(port, dir.path()),
            port,
            child: None,
            dir,
        };
        p.spawn();
        Some(p)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the server printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let child = Command::new(self.program)
            .args(&self.args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let (log, addr) = (
            self.dir.path().join("server.log"),
            format!("127.0.0.1:{}", self.port),
        );
        // Kept before the wait, so that a failed start still stops it on drop.
        let child = self.child.insert(child);
        wait_ready(
            child,
            self.program,
            Duration::from_secs(20),
            || std::fs::read_to_string(&log).unwrap_or_default(),
            || reachable(&addr),
        );
    }

    /// Stop with SIGTERM (a clean shutdown: servers save their state) and
    /// wait; fails the test if the server has not exited 30 s later.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            super::terminate(&mut c, self.program, STOP_DEADLINE);
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // No second panic while a failing test unwinds: just make sure
            // the server is gone.
            if std::thread::panicking() {
                let _ = c.kill();
                let _ = c.wait();
            } else {
                super::terminate(&mut c, self.program, STOP_DEADLINE);
            }
        }
    }
}

/// A throwaway certificate authority and a server certificate it signed for
/// `127.0.0.1` and `localhost`, made with the `openssl` CLI in a temp folder.
pub struct TestCa {
    pub ca_cert: std::path::PathBuf,
    pub server_cert: std::path::PathBuf,
    pub server_key: std::path::PathBuf,
    /// A second CA that signed nothing here: trusting it alone must fail.
    pub other_ca_cert: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl TestCa {
    /// None when `openssl` is not installed (the caller skips).
    pub fn generate() -> Option<TestCa> {
        if !installed("openssl") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let openssl = |args: &[&str]| {
            let out = super::output_within(
                Command::new("openssl").current_dir(d).args(args),
                Duration::from_secs(30),
            );
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        for ca in ["ca", "other-ca"] {
            openssl(
                &[
                    &["req", "-x509", "-nodes", "-days", "2"][..],
                    &ec,
                    &[
                        "-keyout",
                        &format!("{ca}.key"),
                        "-out",
                        &format!("{ca}.pem"),
                        "-subj",
                        &format!("/CN=Ferry test {ca}"),
                        "-addext",
                        "basicConstraints=critical,CA:TRUE",
                        "-addext",
                        "keyUsage=critical,keyCertSign,cRLSign",
                    ],
                ]
                .concat(),
            );
        }
        openssl(
            &[
                &["req", "-new", "-nodes"][..],
                &ec,
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            ]
            .concat(),
        );
        std::fs::write(
            d.join("server.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ]);
        Some(TestCa {
            ca_cert: d.join("ca.pem"),
            server_cert: d.join("server.pem"),
            server_key: d.join("server.key"),
            other_ca_cert: d.join("other-ca.pem"),
            _dir: dir,
        })
    }
}
