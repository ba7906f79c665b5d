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
    pub child: Child,
    pub admin: u16,
}

impl FerryProcess {
    /// Start `ferry run` in `dir` (which holds `routes/` and `connectors/`);
    /// returns once its admin endpoint answers.
    pub fn start(dir: &Path) -> FerryProcess {
        let http = super::closed_port();
        let admin = super::closed_port();
        let child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .current_dir(dir)
            .args([
                "run",
                "--http-listen",
                &format!("127.0.0.1:{http}"),
                "--admin-listen",
                &format!("127.0.0.1:{admin}"),
                "--no-watch",
            ])
            .env("FERRY_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ferry");
        let p = FerryProcess { child, admin };
        let end = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", admin)).is_err() {
            assert!(Instant::now() < end, "ferry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    pub fn kill9(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for FerryProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
