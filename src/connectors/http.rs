//! `http`: a server source and a client sink.
//!
//! **Source.** All routes with the same `listen` address share one listener (axum
//! over hyper). Requests are dispatched by path and method through a lock-free
//! table ([`ArcSwap`]), so routes come and go (hot reload) without the socket
//! ever being rebound: a request sees either the old or the new version of a
//! route, never a refused connection. The reply is sent only after the engine
//! answered the message's ack: 200 with the route's result when delivered, 204
//! when a filter dropped it, 202 when it went to the dead-letter endpoint, 400
//! for bad input, 413 over the body limit, 500 for a permanent failure and 503
//! (with `Retry-After`) when delivery may succeed later.
//!
//! **Sink.** reqwest with rustls. 2xx is delivered; 5xx, 408, 429, timeouts and
//! connection errors are retryable; other statuses are permanent failures.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use axum::body::Body as AxumBody;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};
use tokio_util::sync::CancellationToken;

use super::{DeliveryError, RouteInput, Sink, Source, SourceContext, SourceError, SubmitError};
use crate::config::{BuildContext, ByteSize, ConfigError, HumanDuration};
use crate::connectors::ConnectorConfig;
use crate::message::{Body, FailureKind, Message, Outcome, outcome_of};

const DEFAULT_MAX_BODY: u64 = 10 * 1024 * 1024;

/// Shared HTTP settings in `connectors/NAME.yaml` (`kind: http`).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpConnectorConfig {
    /// Client: base URL that sink `path`s are appended to, e.g. `https://api.example.com/v1`.
    pub base_url: Option<String>,
    /// Client: headers sent with every request (values may use `${ENV}` for secrets).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Client: request timeout (default 30s).
    pub timeout: Option<HumanDuration>,
    /// Server: address to listen on (default from `ferry run --http-listen`, 127.0.0.1:8080).
    pub listen: Option<SocketAddr>,
    /// Server: largest request body accepted (default 10MiB).
    pub max_body: Option<ByteSize>,
}

fn connector<'a>(
    name: &Option<Spanned<String>>,
    ctx: &'a BuildContext,
) -> Result<Option<&'a HttpConnectorConfig>, ConfigError> {
    match name {
        None => Ok(None),
        Some(n) => match ctx.connector(n, "http")? {
            ConnectorConfig::Http(c) => Ok(Some(c)),
            // `ctx.connector` already checked the kind.
            #[allow(unreachable_patterns)]
            _ => Ok(None),
        },
    }
}

// ---------------------------------------------------------------- source

/// Options of an `http` source.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSourceConfig {
    /// Request path, e.g. `/orders` (exact match).
    #[schemars(with = "String")]
    pub path: Spanned<String>,
    /// Accepted methods (default `[POST]`).
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// Address to listen on; routes with the same address share one listener.
    pub listen: Option<SocketAddr>,
    /// Largest request body accepted; larger ones get 413 (default 10MiB).
    pub max_body: Option<ByteSize>,
    /// How long a request waits for room when the route is busy before it gets
    /// 503 with Retry-After (default 5s).
    pub busy_wait: Option<HumanDuration>,
    /// Shared settings from `connectors/NAME.yaml`.
    #[schemars(with = "Option<String>")]
    pub connector: Option<Spanned<String>>,
}

fn default_methods() -> Vec<String> {
    vec!["POST".into()]
}

impl HttpSourceConfig {
    pub fn build(&self, loc: &Location, ctx: &BuildContext) -> Result<HttpSource, ConfigError> {
        let conn = connector(&self.connector, ctx)?;
        let path = &self.path.value;
        if !path.starts_with('/') || path.contains(char::is_whitespace) {
            return Err(ctx.error(
                &self.path.referenced,
                format!("http.path `{path}` must start with `/` and contain no spaces"),
            ));
        }
        let mut methods = Vec::new();
        for m in &self.methods {
            let upper = m.to_ascii_uppercase();
            let known = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
            if !known.contains(&upper.as_str()) {
                return Err(ctx.error(
                    loc,
                    format!(
                        "http.methods: unknown method `{m}` (one of {})",
                        known.join(", ")
                    ),
                ));
            }
            methods.push(Method::from_bytes(upper.as_bytes()).unwrap_or(Method::POST));
        }
        if methods.is_empty() {
            return Err(ctx.error(loc, "http.methods is empty"));
        }
        let listen = self
            .listen
            .or(conn.and_then(|c| c.listen))
            .unwrap_or(ctx.defaults.http_listen);
        let max_body = self
            .max_body
            .or(conn.and_then(|c| c.max_body))
            .map(|b| b.0)
            .unwrap_or(DEFAULT_MAX_BODY);
        Ok(HttpSource {
            listen,
            path: path.clone(),
            methods,
            max_body: usize::try_from(max_body).unwrap_or(usize::MAX),
            busy_wait: self
                .busy_wait
                .map(|d| d.0)
                .unwrap_or(Duration::from_secs(5)),
        })
    }
}

pub struct HttpSource {
    listen: SocketAddr,
    path: String,
    methods: Vec<Method>,
    max_body: usize,
    busy_wait: Duration,
}

#[async_trait]
impl Source for HttpSource {
    async fn run(&self, mut ctx: SourceContext) -> Result<(), SourceError> {
        let listener = ctx
            .resources
            .http
            .listener(self.listen)
            .await
            .map_err(|e| SourceError(format!("cannot listen on {}: {e}", self.listen)))?;
        let id = listener.register(Registration {
            route: ctx.route_id.clone(),
            path: self.path.clone(),
            methods: self.methods.clone(),
            input: ctx.input.clone(),
            max_body: self.max_body,
            busy_wait: self.busy_wait,
            id: 0,
        });
        ctx.ready();
        ctx.shutdown.cancelled().await;
        // Requests already submitted hold their own answer channel; removing the
        // registration only stops new ones from reaching this route version.
        listener.deregister(&self.path, id);
        Ok(())
    }

    fn claims(&self) -> Vec<String> {
        self.methods
            .iter()
            .map(|m| format!("http {} {} {}", self.listen, m, self.path))
            .collect()
    }

    fn describe(&self) -> String {
        let methods: Vec<&str> = self.methods.iter().map(Method::as_str).collect();
        format!(
            "http {} {} on {}",
            methods.join(","),
            self.path,
            self.listen
        )
    }
}

/// One route version's entry in a listener's table.
#[derive(Clone)]
struct Registration {
    route: Arc<str>,
    path: String,
    methods: Vec<Method>,
    input: RouteInput,
    max_body: usize,
    busy_wait: Duration,
    /// Distinguishes versions of the same route during a swap.
    id: u64,
}

type Table = HashMap<String, Vec<Registration>>;

/// One bound socket and its dispatch table.
pub struct Listener {
    table: ArcSwap<Table>,
    /// Serialises writers; readers never lock.
    write: Mutex<()>,
    next_id: AtomicU64,
    closing: AtomicBool,
    pub local_addr: SocketAddr,
}

impl Listener {
    /// Add a route version. A registration of the same route on the same path
    /// (its previous version) is replaced in the same atomic swap, so requests
    /// move from the old version to the new one with no gap.
    fn register(&self, mut reg: Registration) -> u64 {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        reg.id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let id = reg.id;
        let mut table: Table = (**self.table.load()).clone();
        let entries = table.entry(reg.path.clone()).or_default();
        entries.retain(|r| r.route != reg.route);
        entries.push(reg);
        self.table.store(Arc::new(table));
        id
    }

    /// Remove a route version, unless a newer version already replaced it.
    fn deregister(&self, path: &str, id: u64) {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut table: Table = (**self.table.load()).clone();
        if let Some(entries) = table.get_mut(path) {
            entries.retain(|r| r.id != id);
            if entries.is_empty() {
                table.remove(path);
            }
        }
        self.table.store(Arc::new(table));
    }
}

/// The shared HTTP listeners, by address. Bound on first use, kept until Ferry
/// stops.
#[derive(Default)]
pub struct HttpServers {
    listeners: tokio::sync::Mutex<HashMap<SocketAddr, Arc<Listener>>>,
    shutdown: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
}

impl HttpServers {
    /// The listener for `addr`, binding it if this is the first route on it.
    pub async fn listener(&self, addr: SocketAddr) -> std::io::Result<Arc<Listener>> {
        let mut map = self.listeners.lock().await;
        if let Some(l) = map.get(&addr) {
            return Ok(l.clone());
        }
        let tcp = tokio::net::TcpListener::bind(addr).await?;
        let listener = Arc::new(Listener {
            table: ArcSwap::from_pointee(Table::new()),
            write: Mutex::new(()),
            next_id: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            local_addr: tcp.local_addr()?,
        });
        let app = axum::Router::new()
            .fallback(dispatch)
            .with_state(listener.clone());
        let stop = self.shutdown.clone();
        let local = listener.local_addr;
        self.tasks.spawn(async move {
            tracing::info!(listen = %local, "http listener started");
            if let Err(e) = axum::serve(tcp, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
            {
                tracing::error!(listen = %local, error = %e, "http listener failed");
            }
        });
        map.insert(addr, listener.clone());
        // Ephemeral ports (`:0`) are looked up by their real address too.
        if local != addr {
            map.insert(local, listener.clone());
        }
        Ok(listener)
    }

    /// Addresses actually bound (useful with port 0).
    pub async fn bound_addrs(&self) -> Vec<SocketAddr> {
        let map = self.listeners.lock().await;
        let mut v: Vec<SocketAddr> = map.values().map(|l| l.local_addr).collect();
        v.sort();
        v.dedup();
        v
    }

    /// New requests get 503 from now on (Ferry is shutting down); requests in
    /// flight still get their answer.
    pub async fn start_closing(&self) {
        for l in self.listeners.lock().await.values() {
            l.closing.store(true, Ordering::SeqCst);
        }
    }

    /// Close the sockets, letting open connections finish their current request.
    pub async fn stop(&self, wait: Duration) {
        self.shutdown.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(wait, self.tasks.wait()).await;
    }
}

fn json_error(status: StatusCode, message: &str, extra: &[(&str, &str)]) -> Response {
    let mut body = serde_json::Map::new();
    body.insert("error".into(), message.into());
    for (k, v) in extra {
        body.insert((*k).into(), (*v).into());
    }
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::Value::Object(body).to_string(),
    )
        .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

async fn dispatch(State(listener): State<Arc<Listener>>, req: Request) -> Response {
    if listener.closing.load(Ordering::SeqCst) {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ferry is shutting down",
            &[],
        );
    }
    let path = req.uri().path().to_string();
    let table = listener.table.load();
    let Some(entries) = table.get(&path) else {
        return json_error(StatusCode::NOT_FOUND, &format!("no route for {path}"), &[]);
    };
    let Some(reg) = entries
        .iter()
        .find(|r| r.methods.contains(req.method()))
        .cloned()
    else {
        let allow: Vec<&str> = entries
            .iter()
            .flat_map(|r| r.methods.iter().map(Method::as_str))
            .collect();
        let mut resp = json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{} not allowed on {path}", req.method()),
            &[],
        );
        if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
            resp.headers_mut().insert(header::ALLOW, v);
        }
        return resp;
    };
    drop(table);
    handle(reg, req).await
}

async fn handle(reg: Registration, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let too_large = || {
        json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body is over the {} byte limit", reg.max_body),
            &[],
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > reg.max_body as u64) {
        return too_large();
    }
    let bytes = match http_body_util::Limited::new(body, reg.max_body)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read request body: {e}"),
                &[],
            );
        }
    };
    let source = format!("http {} {}", parts.method, parts.uri.path());
    let mut msg = Message::new(reg.route.clone(), source, Body::Bytes(bytes));
    copy_request_headers(&parts.headers, &mut msg);
    msg.headers
        .insert("http.method".into(), parts.method.to_string());
    msg.headers
        .insert("http.path".into(), parts.uri.path().to_string());
    if let Some(q) = parts.uri.query() {
        msg.headers.insert("http.query".into(), q.to_string());
    }
    let id = msg.id.clone();
    let rx = match reg.input.submit_within(msg, reg.busy_wait).await {
        Ok(rx) => rx,
        Err(e @ SubmitError::Busy(_)) | Err(e @ SubmitError::Closed) => {
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                &e.to_string(),
                &[("route", &reg.route)],
            );
        }
    };
    reply(outcome_of(rx).await, &id)
}

fn copy_request_headers(headers: &HeaderMap, msg: &mut Message) {
    for (name, value) in headers {
        if let Ok(v) = value.to_str() {
            // HeaderMap names are already lower-case.
            msg.headers
                .entry(name.as_str().to_string())
                .and_modify(|e| {
                    e.push_str(", ");
                    e.push_str(v);
                })
                .or_insert_with(|| v.to_string());
        }
    }
}

fn reply(outcome: Outcome, id: &str) -> Response {
    let mut resp = match outcome {
        Outcome::Delivered(msg) => {
            let content_type = match &msg.body {
                Body::Json(_) => "application/json".to_string(),
                Body::Bytes(_) => msg
                    .headers
                    .get("content-type")
                    .cloned()
                    .unwrap_or_else(|| "application/octet-stream".into()),
            };
            let mut r = Response::new(AxumBody::from(msg.body.to_bytes()));
            if let Ok(v) = HeaderValue::from_str(&content_type) {
                r.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            r
        }
        Outcome::Dropped { reason } => {
            let mut r = StatusCode::NO_CONTENT.into_response();
            if let Ok(v) = HeaderValue::from_str(&reason) {
                r.headers_mut()
                    .insert(HeaderName::from_static("ferry-dropped"), v);
            }
            r
        }
        Outcome::DeadLettered(f) => json_error(
            StatusCode::ACCEPTED,
            &f.to_string(),
            &[("status", "dead-lettered")],
        ),
        Outcome::Failed(f) => {
            let status = match f.kind {
                FailureKind::BadInput => StatusCode::BAD_REQUEST,
                FailureKind::Permanent => StatusCode::INTERNAL_SERVER_ERROR,
                FailureKind::Retryable | FailureKind::Unavailable => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            };
            json_error(status, &f.message, &[("stage", &f.stage)])
        }
    };
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut()
            .insert(HeaderName::from_static("ferry-message-id"), v);
    }
    resp
}

// ---------------------------------------------------------------- sink

/// Options of an `http` sink.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// Full URL; or use `connector` (its `base_url`) plus `path`.
    pub url: Option<String>,
    /// Appended to the connector's `base_url`.
    pub path: Option<String>,
    /// HTTP method (default POST).
    #[serde(default = "default_method")]
    pub method: String,
    /// Extra request headers (added to the connector's).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Message headers to send as request headers (by name).
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// Request timeout (default 30s); a timeout is a retryable failure.
    pub timeout: Option<HumanDuration>,
    /// Shared settings from `connectors/NAME.yaml`.
    #[schemars(with = "Option<String>")]
    pub connector: Option<Spanned<String>>,
}

fn default_method() -> String {
    "POST".into()
}

impl HttpSinkConfig {
    pub fn build(&self, loc: &Location, ctx: &BuildContext) -> Result<HttpSink, ConfigError> {
        let conn = connector(&self.connector, ctx)?;
        let url = match (
            &self.url,
            conn.and_then(|c| c.base_url.as_ref()),
            &self.path,
        ) {
            (Some(u), _, None) => u.clone(),
            (None, Some(base), p) => format!(
                "{}{}",
                base.trim_end_matches('/'),
                p.as_deref()
                    .map(|p| if p.starts_with('/') {
                        p.to_string()
                    } else {
                        format!("/{p}")
                    })
                    .unwrap_or_default()
            ),
            (Some(_), _, Some(_)) => {
                return Err(ctx.error(
                    loc,
                    "http sink: give either `url`, or `connector` + `path`, not both",
                ));
            }
            (None, None, _) => {
                return Err(ctx.error(
                    loc,
                    "http sink needs `url` (or a connector with `base_url`)",
                ));
            }
        };
        let shown_raw = super::broker::redact_url(&url);
        let parsed = reqwest::Url::parse(&url)
            .map_err(|e| ctx.error(loc, format!("http sink: invalid url `{shown_raw}`: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ctx.error(
                loc,
                format!("http sink: url `{shown_raw}` must be http or https"),
            ));
        }
        // A password in the URL (`https://user:${PW}@host`) never reaches logs,
        // errors or dead letters: they show this instead.
        let shown = super::broker::redact_url(parsed.as_str());
        let method = Method::from_bytes(self.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| ctx.error(loc, format!("http sink: invalid method `{}`", self.method)))?;
        let mut headers = HeaderMap::new();
        let all = conn
            .map(|c| c.headers.iter())
            .into_iter()
            .flatten()
            .chain(self.headers.iter());
        for (k, v) in all {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| ctx.error(loc, format!("http sink: invalid header name `{k}`")))?;
            // Never echo the value: it may be a secret.
            let value = HeaderValue::from_str(v).map_err(|_| {
                ctx.error(loc, format!("http sink: invalid value for header `{k}`"))
            })?;
            headers.insert(name, value);
        }
        let timeout = self
            .timeout
            .or(conn.and_then(|c| c.timeout))
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(30));
        crate::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| ctx.error(loc, format!("http sink: cannot build client: {e}")))?;
        Ok(HttpSink {
            client,
            url: parsed,
            shown,
            method,
            headers,
            forward: self
                .forward_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
        })
    }
}

pub struct HttpSink {
    client: reqwest::Client,
    url: reqwest::Url,
    /// `url` with its password hidden, for messages.
    shown: String,
    method: Method,
    headers: HeaderMap,
    forward: Vec<String>,
}

#[async_trait]
impl Sink for HttpSink {
    async fn deliver(&self, msg: &Message) -> Result<(), DeliveryError> {
        let mut req = self
            .client
            .request(self.method.clone(), self.url.clone())
            .headers(self.headers.clone())
            .header("ferry-message-id", &msg.id);
        let content_type = match &msg.body {
            Body::Json(_) => Some("application/json"),
            Body::Bytes(_) => msg.headers.get("content-type").map(String::as_str),
        };
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        for name in &self.forward {
            if let Some(v) = msg.headers.get(name) {
                req = req.header(name.as_str(), v.as_str());
            }
        }
        let resp = req.body(msg.body.to_bytes()).send().await.map_err(|e| {
            let what = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "connection failed"
            } else {
                "request failed"
            };
            DeliveryError::retryable(format!(
                "{} {}: {what}: {}",
                self.method,
                self.shown,
                super::error_chain(&e)
            ))
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        let snippet: String = body.chars().take(200).collect();
        let message = format!(
            "{} {} answered {status}: {snippet}",
            self.method, self.shown
        );
        if status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
        {
            Err(DeliveryError::retryable(message))
        } else {
            Err(DeliveryError::permanent(message))
        }
    }

    fn describe(&self) -> String {
        format!("http {} {}", self.method, self.shown)
    }
}
