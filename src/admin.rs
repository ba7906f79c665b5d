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
//! - `GET /admin/queues`, `GET|DELETE /admin/queues/{q}/messages`,
//!   `GET /admin/queues/{q}/messages/{seq-or-id}`, `POST /admin/queues/{q}/replay`:
//!   the embedded queues, for `ferry dead-letters` while Ferry runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::dead_letters;
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
        .route("/admin/queues", get(queues))
        .route(
            "/admin/queues/{queue}/messages",
            get(queue_messages).delete(queue_purge),
        )
        .route("/admin/queues/{queue}/messages/{key}", get(queue_message))
        .route("/admin/queues/{queue}/replay", post(queue_replay))
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

async fn store(a: &Admin) -> Result<crate::queue_store::QueueStore, Response> {
    a.engine
        .resources
        .queue_store()
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response())
}

async fn queues(State(a): State<Admin>) -> Response {
    match store(&a).await {
        Ok(s) => Json(s.queues()).into_response(),
        Err(r) => r,
    }
}

#[derive(serde::Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn queue_messages(
    State(a): State<Admin>,
    Path(queue): Path<String>,
    Query(q): Query<Limit>,
) -> Response {
    let s = match store(&a).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match dead_letters::view_list(&s, &queue, q.limit.unwrap_or(20)) {
        Ok(v) => Json(v).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

async fn queue_message(
    State(a): State<Admin>,
    Path((queue, key)): Path<(String, String)>,
) -> Response {
    let s = match store(&a).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match dead_letters::view_one(&s, &queue, &key) {
        Ok(Some(v)) => Json(v).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no such message\n").into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

async fn queue_replay(
    State(a): State<Admin>,
    Path(queue): Path<String>,
    Json(req): Json<dead_letters::ReplayRequest>,
) -> Response {
    let s = match store(&a).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    Json(dead_letters::replay(&s, Some(&a.engine), &queue, &req).await).into_response()
}

async fn queue_purge(State(a): State<Admin>, Path(queue): Path<String>) -> Response {
    let s = match store(&a).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match s.purge(&queue).await {
        Ok(n) => Json(serde_json::json!({ "purged": n })).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
