//! The `ferry` command line: parse arguments, call the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use ferry::config::Defaults;
use ferry::engine::{self, Engine};
use ferry::schema::{SchemaKind, schema_json};

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
    },
    /// Check route and connector files; print every error; exit 1 if any.
    Check {
        /// Route files or folders (default: ./routes).
        paths: Vec<PathBuf>,
        /// Folder of connector files.
        #[arg(long, default_value = "connectors")]
        connectors: PathBuf,
    },
    /// Print the JSON Schema of route files (or connector files).
    Schema {
        #[arg(value_enum, default_value_t = SchemaTarget::Route)]
        target: SchemaTarget,
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
        .with_writer(std::io::stderr);
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
        } => {
            init_logging(cli.log_format);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(
                routes,
                connectors,
                Defaults {
                    http_listen,
                    data_dir: data,
                },
            )) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn run(routes: PathBuf, connectors: PathBuf, defaults: Defaults) -> anyhow::Result<()> {
    std::fs::create_dir_all(&defaults.data_dir)
        .with_context(|| format!("cannot create data folder {}", defaults.data_dir.display()))?;
    let loaded = engine::load(&[routes.clone()], &connectors, &defaults);
    for e in &loaded.errors {
        tracing::error!("{e}");
    }
    if loaded.routes.is_empty() {
        anyhow::bail!(
            "no valid route in {} ({} error(s) above)",
            routes.display(),
            loaded.errors.len()
        );
    }
    let engine = Engine::new();
    let failed = engine.start(loaded.routes).await;
    let running = engine.route_ids().await;
    tracing::info!(
        routes = running.len(),
        failed = failed.len(),
        "ferry is running; Ctrl-C or SIGTERM stops it"
    );
    if running.is_empty() {
        anyhow::bail!("no route could start");
    }
    wait_for_signal().await;
    tracing::info!("stopping: no new input; finishing messages in flight");
    engine.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
