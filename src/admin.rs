//! The admin HTTP endpoint (`--admin-listen`, default 127.0.0.1:9090), separate
//! from the message listeners so operators can reach it while routes are busy:
//!
//! - `GET /health`: the process is alive.
//! - `GET /ready`: routes are running (503 before start and while stopping).
//! - `GET /metrics`: Prometheus text format.
//! - `GET /admin/routes`: each route's id, version, state, start time and last
//!   reload error, plus files whose errors keep them from running.
//! - `POST /admin/reload`: reload now; answers with the reload report (200 when
//!   it applied cleanly, 422 when some file was invalid or a route failed).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;

/// The process-wide Prometheus recorder (installed once).
pub fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().ok())
        .clone()
}

#[derive(Clone)]
struct Admin {
    engine: Arc<Engine>,
    ready: Arc<AtomicBool>,
    metrics: Option<PrometheusHandle>,
}

/// Readiness flag that `/ready` reports.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }
}

/// Bind the admin listener and serve until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    engine: Arc<Engine>,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let state = Admin {
        engine,
        ready: readiness.0,
        metrics: metrics_handle(),
    };
    let app = axum::Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/admin/routes", get(routes))
        .route("/admin/reload", post(reload))
        .with_state(state);
    let tcp = tokio::net::TcpListener::bind(addr).await?;
    let local = tcp.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(tcp, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
        {
            tracing::error!(error = %e, "admin listener failed");
        }
    });
    tracing::info!(listen = %local, "admin listener started");
    Ok(local)
}

async fn ready(State(a): State<Admin>) -> Response {
    if a.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(a): State<Admin>) -> Response {
    match &a.metrics {
        Some(h) => ([("content-type", "text/plain; version=0.0.4")], h.render()).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder unavailable\n",
        )
            .into_response(),
    }
}

async fn routes(State(a): State<Admin>) -> Response {
    let (routes, invalid_files) = a.engine.status().await;
    Json(serde_json::json!({
        "routes": routes,
        "invalid_files": invalid_files,
        "last_reload": a.engine.last_reload().await,
    }))
    .into_response()
}

async fn reload(State(a): State<Admin>) -> Response {
    let report = a.engine.reload().await;
    let status = if report.ok() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    (status, Json(report)).into_response()
}
