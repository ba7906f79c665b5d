//! The `ferry` command line: parse arguments, call the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use ferry::config::Defaults;
use std::path::Path;
use std::sync::Arc;

use ferry::admin::Readiness;
use ferry::dead_letters::{Backend, ReplayRequest};
use ferry::engine::watch::{self, ReloadTrigger, WatchOptions};
use ferry::engine::{self, ConfigDirs, Engine};
use ferry::queue_store::FsyncPolicy;
use ferry::schema::{SchemaKind, schema_json};
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Ferry: an integration router. Routes move messages between HTTP, files, queues and legacy systems."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "FERRY_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the routes.
    Run {
        /// Folder of route files.
        #[arg(long, default_value = "routes", env = "FERRY_ROUTES")]
        routes: PathBuf,
        /// Folder of connector files.
        #[arg(long, default_value = "connectors", env = "FERRY_CONNECTORS")]
        connectors: PathBuf,
        /// Folder for Ferry's state (queues, stores).
        #[arg(long, default_value = "data", env = "FERRY_DATA")]
        data: PathBuf,
        /// Default address of `http` sources.
        #[arg(long, default_value = "127.0.0.1:8080", env = "FERRY_HTTP_LISTEN")]
        http_listen: SocketAddr,
        /// Address of the admin endpoint (health, metrics, route status, reload).
        #[arg(long, default_value = "127.0.0.1:9090", env = "FERRY_ADMIN_LISTEN")]
        admin_listen: SocketAddr,
        /// When the embedded queue syncs to disk: `always` (every commit, the
        /// default) or `interval:100ms` (see docs/queue.md for what each risks).
        #[arg(long, default_value = "always", env = "FERRY_QUEUE_FSYNC")]
        queue_fsync: FsyncPolicy,
        /// Do not watch the route and connector folders (SIGHUP and
        /// `POST /admin/reload` still reload).
        #[arg(long)]
        no_watch: bool,
    },
    /// Check route and connector files; print every error; exit 1 if any.
    Check {
        /// Route files or folders (default: ./routes).
        paths: Vec<PathBuf>,
        /// Folder of connector files.
        #[arg(long, default_value = "connectors")]
        connectors: PathBuf,
    },
    /// Inspect, replay or purge dead letters (any embedded queue).
    DeadLetters {
        #[command(subcommand)]
        action: DeadLetterAction,
        /// Ferry's data folder (where `queues.redb` is).
        #[arg(long, global = true, default_value = "data", env = "FERRY_DATA")]
        data: PathBuf,
        /// Admin endpoint of a running Ferry (used when it holds the store).
        #[arg(
            long,
            global = true,
            default_value = "127.0.0.1:9090",
            env = "FERRY_ADMIN_LISTEN"
        )]
        admin: SocketAddr,
    },
    /// Print the JSON Schema of route files (or connector files).
    Schema {
        #[arg(value_enum, default_value_t = SchemaTarget::Route)]
        target: SchemaTarget,
    },
}

#[derive(Subcommand)]
enum DeadLetterAction {
    /// Every queue with its size.
    Queues,
    /// The oldest messages of a queue, with their errors.
    List {
        queue: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// One message (by sequence number or message id), headers and body.
    Show { queue: String, key: String },
    /// Send messages back: to the queue they came from (default), another
    /// queue, or a running route.
    Replay {
        queue: String,
        #[arg(long, conflicts_with = "to_route")]
        to_queue: Option<String>,
        #[arg(long)]
        to_route: Option<String>,
        /// Replay at most this many (default: all).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Delete every message of a queue.
    Purge {
        queue: String,
        /// Confirm.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum SchemaTarget {
    Route,
    Connector,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Schema { target } => {
            let kind = match target {
                SchemaTarget::Route => SchemaKind::Route,
                SchemaTarget::Connector => SchemaKind::Connector,
            };
            println!("{}", schema_json(kind));
            ExitCode::SUCCESS
        }
        Command::DeadLetters {
            action,
            data,
            admin,
        } => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(dead_letters(action, &data, admin)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { paths, connectors } => {
            let paths = if paths.is_empty() {
                vec![PathBuf::from("routes")]
            } else {
                paths
            };
            let loaded = engine::load(&paths, &connectors, &Defaults::default());
            for e in &loaded.errors {
                eprintln!("error: {e}");
            }
            if loaded.errors.is_empty() {
                println!("ok: {} route(s) checked", loaded.routes.len());
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "{} error(s); {} route(s) valid",
                    loaded.errors.len(),
                    loaded.routes.len()
                );
                ExitCode::FAILURE
            }
        }
        Command::Run {
            routes,
            connectors,
            data,
            http_listen,
            admin_listen,
            queue_fsync,
            no_watch,
        } => {
            init_logging(cli.log_format);
            // Script evaluation recurses: give workers the stack the default
            // script limits need, so scripts never run on a borrowed stack.
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_stack_size(ferry::script::ScriptLimits::default().stack_bytes())
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let dirs = ConfigDirs {
                routes,
                connectors,
                defaults: Defaults {
                    http_listen,
                    data_dir: data,
                    queue_fsync,
                },
            };
            match runtime.block_on(run(dirs, admin_listen, !no_watch)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn run(dirs: ConfigDirs, admin_listen: SocketAddr, watch: bool) -> anyhow::Result<()> {
    let mut signals = Signals::install().context("cannot install signal handlers")?;
    let data_dir = dirs.defaults.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data folder {}", data_dir.display()))?;
    ferry::admin::metrics_handle();
    let engine = Arc::new(Engine::with_dirs(dirs));
    // At startup every file must be valid (fail fast, like `ferry check`);
    // later reloads keep the running version of a file that turns invalid.
    let report = engine.reload().await;
    if !report.ok() {
        engine.shutdown().await;
        anyhow::bail!(
            "{} error(s) in the route or connector files (see above)",
            report.errors.len()
        );
    }
    let shutdown = CancellationToken::new();
    // The admin endpoint outlives the drain, so `/ready` can answer 503 while
    // routes finish their messages.
    let admin_stop = CancellationToken::new();
    let readiness = Readiness::default();
    ferry::admin::serve(
        admin_listen,
        engine.clone(),
        readiness.clone(),
        admin_stop.clone(),
    )
    .await
    .with_context(|| format!("cannot listen on {admin_listen} (admin)"))?;
    let trigger = ReloadTrigger::default();
    if watch {
        watch::spawn(
            engine.clone(),
            WatchOptions::default(),
            trigger.clone(),
            shutdown.clone(),
        );
    }
    let running = engine.route_ids().await;
    if running.is_empty() {
        tracing::warn!("no routes yet; add route files and they start without a restart");
    }
    readiness.set(true);
    tracing::info!(
        routes = running.len(),
        "ferry is running; Ctrl-C or SIGTERM stops it, SIGHUP reloads"
    );
    signals.wait(&trigger).await;
    readiness.set(false);
    tracing::info!("stopping: no new input; finishing messages in flight");
    shutdown.cancel();
    engine.shutdown().await;
    admin_stop.cancel();
    tracing::info!("stopped");
    Ok(())
}

async fn dead_letters(
    action: DeadLetterAction,
    data: &Path,
    admin: SocketAddr,
) -> anyhow::Result<()> {
    let backend = Backend::connect(data, admin)
        .await
        .map_err(anyhow::Error::msg)?;
    match action {
        DeadLetterAction::Queues => {
            for q in backend.queues().await.map_err(anyhow::Error::msg)? {
                println!(
                    "{:<30} {:>10} messages ({} being processed)",
                    q.name, q.messages, q.leased
                );
            }
        }
        DeadLetterAction::List { queue, limit } => {
            let list = backend
                .list(&queue, limit)
                .await
                .map_err(anyhow::Error::msg)?;
            if list.is_empty() {
                println!("{queue}: empty");
            }
            for m in list {
                let h = |k: &str| m.headers.get(k).cloned().unwrap_or_default();
                println!(
                    "{:>6}  {}  {}  {}  [{}] {}",
                    m.seq,
                    m.id,
                    m.received_at,
                    h("ferry-route"),
                    h("ferry-error-stage"),
                    h("ferry-error")
                );
            }
        }
        DeadLetterAction::Show { queue, key } => match backend
            .show(&queue, &key)
            .await
            .map_err(anyhow::Error::msg)?
        {
            Some(m) => println!("{}", serde_json::to_string_pretty(&m)?),
            None => anyhow::bail!("no message `{key}` in queue {queue}"),
        },
        DeadLetterAction::Replay {
            queue,
            to_queue,
            to_route,
            limit,
        } => {
            let total = backend
                .queues()
                .await
                .map_err(anyhow::Error::msg)?
                .into_iter()
                .find(|q| q.name == queue)
                .map_or(0, |q| q.messages);
            let want = limit.map_or(total, |l| (l as u64).min(total));
            let bar = ProgressBar::new(want).with_style(
                ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} replayed ({per_sec}, eta {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let (mut replayed, mut failed) = (0u64, Vec::new());
            while replayed < want {
                let batch = ((want - replayed) as usize).min(100);
                let req = ReplayRequest {
                    to_queue: to_queue.clone(),
                    to_route: to_route.clone(),
                    limit: Some(batch),
                };
                let r = backend
                    .replay(&queue, &req)
                    .await
                    .map_err(anyhow::Error::msg)?;
                replayed += r.replayed as u64;
                bar.inc(r.replayed as u64);
                failed.extend(r.failed);
                // Messages that fail stay first in the queue: stop rather than loop on them.
                if r.replayed < batch {
                    break;
                }
            }
            bar.finish_and_clear();
            println!(
                "replayed {replayed} message(s) from {queue}; {} failed",
                failed.len()
            );
            for f in failed.iter().take(20) {
                println!("  failed: {f}");
            }
            if !failed.is_empty() {
                anyhow::bail!(
                    "{} message(s) could not be replayed and stay in {queue}",
                    failed.len()
                );
            }
        }
        DeadLetterAction::Purge { queue, yes } => {
            if !yes {
                anyhow::bail!("purge deletes every message of {queue}; add --yes to confirm");
            }
            let n = backend.purge(&queue).await.map_err(anyhow::Error::msg)?;
            println!("purged {n} message(s) from {queue}");
        }
    }
    Ok(())
}

/// SIGINT/SIGTERM (stop) and SIGHUP (reload) handlers, installed before any
/// route starts so that an early signal is a graceful stop, never a kill.
#[cfg(unix)]
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Wait for SIGINT or SIGTERM; SIGHUP triggers a reload meanwhile.
    async fn wait(&mut self, trigger: &ReloadTrigger) {
        loop {
            tokio::select! {
                _ = self.int.recv() => return,
                _ = self.term.recv() => return,
                _ = self.hup.recv() => {
                    tracing::info!("SIGHUP: reloading");
                    trigger.reload_now();
                }
            }
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals)
    }

    async fn wait(&mut self, _trigger: &ReloadTrigger) {
        let _ = tokio::signal::ctrl_c().await;
    }
}
