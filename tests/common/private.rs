//! Servers of a test's own that need more than a port and arguments (see
//! [`super::services::Private`] for those): a RabbitMQ node and a PostgreSQL
//! cluster, each speaking only TLS with a certificate from a throwaway CA, in
//! a temp folder, on a free port. They never touch the shared services.
//!
//! Each server runs in a process group of its own. Dropping it asks for a
//! clean stop, waits with a deadline, then kills the whole group, so a test
//! that fails (or a server that hangs on stop) leaves nothing running.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::services::{TestCa, reachable, unique};

/// None, after saying why: fails the test with `FERRY_REQUIRE_SERVICES=1`,
/// else prints `SKIPPED: …` (the caller returns).
fn skip<T>(why: &str) -> Option<T> {
    if std::env::var("FERRY_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{why}, and FERRY_REQUIRE_SERVICES=1 says it must be there");
    }
    eprintln!("SKIPPED: {why}");
    None
}

/// A server process (group leader) with its folder and log file.
struct Server {
    name: &'static str,
    child: Child,
    /// The signal that asks this server for a clean, quick stop.
    stop_signal: &'static str,
    log: PathBuf,
    // Dropped after the process is gone (fields drop in order).
    _dir: tempfile::TempDir,
}

impl Server {
    /// Spawn `cmd` as the leader of a new process group, output to `log`.
    fn spawn(
        name: &'static str,
        mut cmd: Command,
        stop_signal: &'static str,
        log: PathBuf,
        dir: tempfile::TempDir,
    ) -> Server {
        use std::os::unix::process::CommandExt;
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Server {
            name,
            child,
            stop_signal,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until `ready()` holds; fails with the server's log if it exits or
    /// takes longer than `timeout`.
    fn wait_ready(&mut self, timeout: Duration, ready: impl FnMut() -> bool) {
        let log = &self.log;
        super::services::wait_ready(
            &mut self.child,
            self.name,
            timeout,
            || std::fs::read_to_string(log).unwrap_or_default(),
            ready,
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args([self.stop_signal, &pid]).status();
        let end = Instant::now() + Duration::from_secs(20);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        // The group: the leader if it hung, and any helper it left behind.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

/// A RabbitMQ node of its own whose only listener is AMQPS (AMQP over TLS).
pub struct Rabbit {
    server: Server,
    pub port: u16,
}

impl Rabbit {
    /// Start a node presenting `ca`'s server certificate; returns once the
    /// TLS port accepts. None when RabbitMQ is not installed (the caller
    /// skips).
    pub fn start_tls(ca: &TestCa) -> Option<Rabbit> {
        // The real start script: Debian's /usr/sbin wrapper switches users
        // and writes its output to /var/log.
        let Some(script) = [
            "/usr/lib/rabbitmq/bin/rabbitmq-server",
            "/usr/sbin/rabbitmq-server",
        ]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists()) else {
            return skip("rabbitmq-server is not installed");
        };
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (port, node_port, dist_port) = (
            super::closed_port(),
            super::closed_port(),
            super::closed_port(),
        );
        std::fs::write(
            d.join("rabbitmq.conf"),
            format!(
                "listeners.tcp = none\n\
                 listeners.ssl.default = 127.0.0.1:{port}\n\
                 ssl_options.certfile = {}\n\
                 ssl_options.keyfile = {}\n\
                 ssl_options.verify = verify_none\n\
                 ssl_options.fail_if_no_peer_cert = false\n",
                ca.server_cert.display(),
                ca.server_key.display()
            ),
        )
        .unwrap();
        // No plugins (the management plugin would want port 15672), and our
        // own env file instead of /etc/rabbitmq's, which names the shared node.
        std::fs::write(d.join("enabled_plugins"), "[].\n").unwrap();
        std::fs::write(d.join("rabbitmq-env.conf"), "").unwrap();
        let mut cmd = Command::new(script);
        cmd.current_dir(d)
            // The Erlang cookie is created in $HOME: keep it in the temp folder.
            .env("HOME", d)
            .env(
                "RABBITMQ_NODENAME",
                format!("{}@localhost", unique("ferry")),
            )
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            // Unused (no TCP listener) but must not clash with the shared node's.
            .env("RABBITMQ_NODE_PORT", node_port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_CONF_ENV_FILE", d.join("rabbitmq-env.conf"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_PID_FILE", d.join("rabbitmq.pid"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("ERL_FLAGS", "-kernel inet_dist_use_interface {127,0,0,1}");
        let log = d.join("server.log");
        // SIGTERM: the script's trap stops the node cleanly.
        let mut server = Server::spawn("rabbitmq-server", cmd, "-TERM", log, dir);
        // Booting a node takes 5-15 s on a busy machine.
        server.wait_ready(Duration::from_secs(120), || {
            reachable(&format!("127.0.0.1:{port}"))
        });
        Some(Rabbit { server, port })
    }

    /// What the node printed so far (for failure messages).
    pub fn log(&self) -> String {
        self.server.log()
    }
}

/// A PostgreSQL cluster of its own (`initdb` in a temp folder) that accepts
/// only TLS connections over TCP (`hostssl` in `pg_hba.conf`), user
/// `postgres` without a password.
pub struct Postgres {
    server: Server,
    pub port: u16,
}

impl Postgres {
    /// Start a cluster presenting `ca`'s server certificate; returns once it
    /// accepts connections. None when PostgreSQL's server programs are not
    /// installed (the caller skips).
    pub fn start_tls(ca: &TestCa) -> Option<Postgres> {
        use std::os::unix::process::CommandExt;
        let Some(bin) = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
            .filter(|b| b.join("initdb").exists() && b.join("postgres").exists())
        else {
            return skip("PostgreSQL's server programs (pg_config --bindir) are not installed");
        };
        // initdb and postgres refuse to run as root: run them as the user the
        // machine's own PostgreSQL runs as.
        let owner = if id(&["-u"]) == Some(0) {
            match (id(&["-u", "postgres"]), id(&["-g", "postgres"])) {
                (Some(uid), Some(gid)) => Some((uid, gid)),
                _ => return skip("running as root and there is no `postgres` user for initdb"),
            }
        } else {
            None
        };
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let (cert, key) = (d.join("server.pem"), d.join("server.key"));
        std::fs::copy(&ca.server_cert, &cert).unwrap();
        std::fs::copy(&ca.server_key, &key).unwrap();
        // PostgreSQL refuses a key file others can read.
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        if let Some((uid, gid)) = owner {
            for p in [&d, &cert, &key] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
            }
        }
        let as_owner = |program: PathBuf| {
            let mut cmd = Command::new(program);
            if let Some((uid, gid)) = owner {
                cmd.uid(uid).gid(gid);
            }
            cmd
        };
        let data = d.join("data");
        let mut initdb = as_owner(bin.join("initdb"));
        initdb.arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "--no-instructions",
        ]);
        run_within(initdb, &d.join("initdb.log"), Duration::from_secs(60));
        // TCP only with TLS: a plain connection is refused by pg_hba.conf.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        let port = super::closed_port();
        let mut cmd = as_owner(bin.join("postgres"));
        cmd.arg("-D").arg(&data);
        for setting in [
            format!("port={port}"),
            "listen_addresses=127.0.0.1".into(),
            format!("unix_socket_directories={}", d.display()),
            "ssl=on".into(),
            format!("ssl_cert_file={}", cert.display()),
            format!("ssl_key_file={}", key.display()),
            "fsync=off".into(),
        ] {
            cmd.arg("-c").arg(setting);
        }
        let log = d.join("server.log");
        // SIGINT is PostgreSQL's fast shutdown (SIGTERM would wait for clients).
        let mut server = Server::spawn("postgres", cmd, "-INT", log, dir);
        let isready = bin.join("pg_isready");
        server.wait_ready(Duration::from_secs(60), || {
            Command::new(&isready)
                .args(["-q", "-t", "2", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .is_ok_and(|s| s.success())
        });
        Some(Postgres { server, port })
    }

    /// What the server printed so far (for failure messages).
    pub fn log(&self) -> String {
        self.server.log()
    }
}

/// Run `cmd` to its end, output to `log`; fails the test (after killing it)
/// if it fails or is still running after `deadline`.
fn run_within(mut cmd: Command, log: &Path, deadline: Duration) {
    let out = std::fs::File::create(log).unwrap();
    let mut child = cmd
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let status = super::wait_within(&mut child, &format!("{cmd:?}"), deadline);
    assert!(
        status.success(),
        "{cmd:?} failed ({status}):\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// `id ARGS` as a number (None if `id` fails, e.g. an unknown user).
fn id(args: &[&str]) -> Option<u32> {
    let out = Command::new("id").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}
