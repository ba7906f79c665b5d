//! `postgres`: a sink that inserts or upserts one row per message, and a
//! source that polls a query (woken early by LISTEN/NOTIFY), over tokio-postgres.
//!
//! **Invariant (source):** a row is marked (the route's `mark` statement, e.g.
//! `UPDATE outbox SET sent_at = now() WHERE id = $1`, or a `DELETE`) only
//! after the route's outcome says handled. The query must select unmarked
//! rows, so a row whose Ferry died, or whose delivery failed, is selected
//! again: a failed row after `retry_delay`. Rows in flight are remembered by
//! key and not handed out twice.
//!
//! **Sink, no string-built SQL:** the statement is fixed when the route loads,
//! from identifiers that were validated and quoted; the message's values only
//! ever travel as one JSON parameter, which PostgreSQL turns into a row of the
//! table's own column types with `json_populate_record`.
//!
//! **Connections.** Sinks share one client per database URL (tokio-postgres
//! pipelines concurrent statements on it); it reconnects on the next message
//! after a drop. A source holds its own connection (LISTEN notifications
//! arrive on the connection that listens) and reconnects with backoff.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::{Location, Spanned};
use tokio::sync::mpsc;
use tokio_postgres::types::{ToSql, Type};

use super::broker::{
    Backoff, BrokerConnector, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_BACKOFF, InFlight, Pool,
    TlsOptions, failure_text, or_default, redact_url, resolve_endpoint, sleep_or_stop,
    with_timeout,
};
use super::{DeliveryError, Resources, Sink, Source, SourceContext, SourceError};
use crate::config::{BuildContext, ConfigError, HumanDuration};
use crate::connectors::ConnectorConfig;
use crate::jsonpath::JsonPath;
use crate::message::{Body, Message};
use crate::template::{Template, body_field};

/// Shared PostgreSQL settings in `connectors/NAME.yaml` (`kind: postgres`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresConnectorConfig {
    /// `postgres://USER:PASSWORD@HOST:5432/DB?sslmode=require` or
    /// `host=… user=… dbname=…`.
    pub url: String,
    /// How long connecting may take before it fails (default 5s).
    pub connect_timeout: Option<HumanDuration>,
    /// Longest wait between reconnect attempts (default 30s).
    pub max_backoff: Option<HumanDuration>,
    /// TLS settings; TLS is used when `tls.enabled`, a `ca_file`, or
    /// `sslmode=require` (or stricter) is set.
    #[serde(default)]
    pub tls: TlsOptions,
}

impl BrokerConnector for PostgresConnectorConfig {
    const KIND: &'static str = "postgres";
    fn from_config(c: &ConnectorConfig) -> Option<&Self> {
        match c {
            ConnectorConfig::Postgres(c) => Some(c),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }
    fn url(&self) -> &str {
        &self.url
    }
}

#[derive(Debug, Clone)]
struct Settings {
    url: String,
    tls: TlsOptions,
    connect_timeout: Duration,
    max_backoff: Duration,
}

impl Settings {
    fn resolve(
        url: &Option<String>,
        connector: &Option<Spanned<String>>,
        loc: &Location,
        ctx: &BuildContext,
    ) -> Result<Settings, ConfigError> {
        let (conn, url) = resolve_endpoint::<PostgresConnectorConfig>(url, connector, loc, ctx)?;
        if let Err(e) = url.parse::<tokio_postgres::Config>() {
            return Err(ctx.error(loc, format!("postgres url `{}`: {e}", redact_url(&url))));
        }
        Ok(Settings {
            url,
            tls: conn.map(|c| c.tls.clone()).unwrap_or_default(),
            connect_timeout: or_default(
                conn.and_then(|c| c.connect_timeout),
                DEFAULT_CONNECT_TIMEOUT,
            ),
            max_backoff: or_default(conn.and_then(|c| c.max_backoff), DEFAULT_MAX_BACKOFF),
        })
    }

    fn shown(&self) -> String {
        redact_url(&self.url)
    }

    /// Connect; the connection task forwards NOTIFY payloads to `notify`.
    async fn connect(
        &self,
        notify: Option<mpsc::Sender<String>>,
    ) -> Result<tokio_postgres::Client, String> {
        use tokio_postgres::config::SslMode;
        let mut config: tokio_postgres::Config =
            self.url.parse().map_err(|e| format!("postgres url: {e}"))?;
        config.connect_timeout(self.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("ferry");
        }
        let wants_tls = self.tls.is_set() || matches!(config.get_ssl_mode(), SslMode::Require);
        let what = format!("cannot connect to postgres {}", self.shown());
        let timeout = self.connect_timeout + Duration::from_secs(1);
        // tokio-postgres's Display stops at "db error" / "error performing TLS
        // handshake"; the reason (role, certificate) is in its source.
        if wants_tls {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(
                self.tls.rustls_config().map_err(|e| e.to_string())?,
            );
            let connecting = async {
                config
                    .connect(tls)
                    .await
                    .map_err(|e| super::error_chain(&e))
            };
            let (client, conn) = with_timeout(timeout, &what, connecting)
                .await
                .map_err(super::broker::explain_certificate)?;
            spawn_connection(conn, notify);
            Ok(client)
        } else {
            let connecting = async {
                config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| super::error_chain(&e))
            };
            let (client, conn) = with_timeout(timeout, &what, connecting).await?;
            spawn_connection(conn, notify);
            Ok(client)
        }
    }
}

/// Drive a connection: its messages (NOTIFY) go to `notify`.
fn spawn_connection<S, T>(
    mut conn: tokio_postgres::Connection<S, T>,
    notify: Option<mpsc::Sender<String>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = futures_util::StreamExt::next(&mut messages).await {
            match m {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    if let Some(tx) = &notify {
                        // A full channel already holds a wake-up.
                        let _ = tx.try_send(n.payload().to_string());
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "postgres connection ended");
                    break;
                }
            }
        }
    });
}

/// Classify a database error: data and schema errors are permanent.
fn db_error(context: &str, e: &tokio_postgres::Error) -> DeliveryError {
    let text = match e.as_db_error() {
        Some(db) => format!("{context}: {} ({})", db.message(), db.code().code()),
        None => format!("{context}: {e}"),
    };
    match e.code().map(|c| c.code()) {
        // 22 data exception, 23 integrity constraint, 42 syntax/undefined object.
        Some(c) if c.starts_with("22") || c.starts_with("23") || c.starts_with("42") => {
            DeliveryError::permanent(text)
        }
        _ => DeliveryError::retryable(text),
    }
}

/// The PostgreSQL clients shared by sinks.
#[derive(Default)]
pub struct PostgresConnections {
    pool: Pool<PostgresConnection>,
}

/// One shared client, replaced when it closes.
pub struct PostgresConnection {
    settings: Settings,
    client: tokio::sync::Mutex<Option<Arc<tokio_postgres::Client>>>,
}

impl PostgresConnection {
    async fn client(&self) -> Result<Arc<tokio_postgres::Client>, String> {
        let mut g = self.client.lock().await;
        if let Some(c) = g.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let c = Arc::new(self.settings.connect(None).await?);
        *g = Some(c.clone());
        Ok(c)
    }
}

/// Check an SQL identifier (`name` or `schema.name`) and quote it.
fn quote_ident(name: &str) -> Option<String> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 2 {
        return None;
    }
    let ok = |p: &str| {
        let mut c = p.chars();
        matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
            && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
            && p.len() <= 63
    };
    parts.iter().all(|p| ok(p)).then(|| {
        parts
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(".")
    })
}

// ---------------------------------------------------------------- sink

/// What to do when a row with the same conflict key exists.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnConflict {
    /// Update the other mapped columns (default when `conflict_key` is set).
    #[default]
    Update,
    /// Keep the existing row.
    Nothing,
}

/// Options of a `postgres` sink.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkConfig {
    /// Table (`name` or `schema.name`).
    pub table: String,
    /// Column → value: a JSONPath into the body (`$.order.id`), a template
    /// (`{header.order-id}`, `{id}`, `{datetime}`), or exactly `{body}` /
    /// `{body.PATH}`, which keep JSON types (for numbers and jsonb columns).
    /// PostgreSQL converts each value to the column's type.
    pub columns: BTreeMap<String, String>,
    /// Columns of a unique constraint: insert, or on conflict `on_conflict`.
    #[serde(default)]
    pub conflict_key: Vec<String>,
    /// `update` (default: an upsert) or `nothing`.
    #[serde(default)]
    pub on_conflict: OnConflict,
    /// Database URL (instead of, or overriding, the connector's).
    pub url: Option<String>,
    /// Connector file of kind `postgres`.
    #[schemars(with = "Option<String>")]
    pub connector: Option<Spanned<String>>,
    /// Statement timeout (default 30s).
    pub timeout: Option<HumanDuration>,
}

/// How a column's value is taken from a message.
enum ValueSpec {
    Path(JsonPath),
    Body(Vec<String>),
    Text(Template),
}

impl ValueSpec {
    fn parse(s: &str) -> Result<ValueSpec, String> {
        if s.starts_with('$') {
            return JsonPath::compile(s)
                .map(ValueSpec::Path)
                .map_err(|e| format!("invalid JSONPath `{s}`: {e}"));
        }
        if let Some(inner) = s.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
            if inner == "body" {
                return Ok(ValueSpec::Body(Vec::new()));
            }
            if let Some(path) = inner
                .strip_prefix("body.")
                .filter(|p| !p.contains(['{', '}']))
            {
                return Ok(ValueSpec::Body(
                    path.split('.').map(str::to_string).collect(),
                ));
            }
        }
        Template::parse(s).map(ValueSpec::Text)
    }

    fn value(&self, msg: &Message) -> Value {
        match self {
            ValueSpec::Path(p) => msg
                .body
                .to_value()
                .ok()
                .and_then(|v| p.query_one(&v))
                .unwrap_or(Value::Null),
            ValueSpec::Body(path) if path.is_empty() => msg.body.to_value().unwrap_or(Value::Null),
            ValueSpec::Body(path) => body_field(msg, path).unwrap_or(Value::Null),
            ValueSpec::Text(t) => Value::String(t.render(msg)),
        }
    }
}

impl PostgresSinkConfig {
    pub fn build(&self, loc: &Location, ctx: &BuildContext) -> Result<PostgresSink, ConfigError> {
        let settings = Settings::resolve(&self.url, &self.connector, loc, ctx)?;
        let table = quote_ident(&self.table).ok_or_else(|| {
            ctx.error(loc, format!("postgres.table `{}` is not a plain identifier (letters, digits, `_`, optionally `schema.`)", self.table))
        })?;
        if self.columns.is_empty() {
            return Err(ctx.error(loc, "postgres.columns is empty"));
        }
        let mut columns = Vec::new();
        for (name, spec) in &self.columns {
            let quoted = quote_ident(name)
                .filter(|_| !name.contains('.'))
                .ok_or_else(|| {
                    ctx.error(
                        loc,
                        format!("postgres column `{name}` is not a plain identifier"),
                    )
                })?;
            let spec = ValueSpec::parse(spec)
                .map_err(|e| ctx.error(loc, format!("postgres column `{name}`: {e}")))?;
            columns.push((name.clone(), quoted, spec));
        }
        let mut keys = Vec::new();
        for k in &self.conflict_key {
            if !self.columns.contains_key(k) {
                return Err(ctx.error(
                    loc,
                    format!("postgres.conflict_key `{k}` is not one of the mapped columns"),
                ));
            }
            keys.push(format!("\"{k}\""));
        }
        let list: Vec<&str> = columns.iter().map(|(_, q, _)| q.as_str()).collect();
        let list = list.join(", ");
        let mut sql = format!(
            "INSERT INTO {table} ({list}) SELECT {list} FROM json_populate_record(NULL::{table}, $1::json)"
        );
        if !keys.is_empty() {
            let updates: Vec<String> = columns
                .iter()
                .filter(|(n, _, _)| !self.conflict_key.contains(n))
                .map(|(_, q, _)| format!("{q} = EXCLUDED.{q}"))
                .collect();
            let action = if self.on_conflict == OnConflict::Nothing || updates.is_empty() {
                "NOTHING".to_string()
            } else {
                format!("UPDATE SET {}", updates.join(", "))
            };
            sql.push_str(&format!(" ON CONFLICT ({}) DO {action}", keys.join(", ")));
        }
        Ok(PostgresSink {
            settings,
            table: self.table.clone(),
            columns: columns.into_iter().map(|(n, _, s)| (n, s)).collect(),
            sql,
            timeout: or_default(self.timeout, Duration::from_secs(30)),
            conn: OnceLock::new(),
        })
    }
}

pub struct PostgresSink {
    settings: Settings,
    table: String,
    columns: Vec<(String, ValueSpec)>,
    sql: String,
    timeout: Duration,
    conn: OnceLock<Arc<PostgresConnection>>,
}

#[async_trait]
impl Sink for PostgresSink {
    async fn start(&self, resources: &Arc<Resources>) -> Result<(), String> {
        let conn = self
            .conn
            .get_or_init(|| {
                resources.postgres.pool.get_or_insert(
                    &format!("{}|{:?}", self.settings.url, self.settings.tls),
                    || PostgresConnection {
                        settings: self.settings.clone(),
                        client: tokio::sync::Mutex::new(None),
                    },
                )
            })
            .clone();
        let client = conn.client().await?;
        // Preparing checks the table and columns now, not per message.
        client.prepare(&self.sql).await.map_err(|e| {
            format!(
                "table `{}`: {}",
                self.table,
                db_error("cannot prepare the insert", &e)
            )
        })?;
        Ok(())
    }

    async fn deliver(&self, msg: &Message) -> Result<(), DeliveryError> {
        let Some(conn) = self.conn.get() else {
            return Err(DeliveryError::retryable(
                "postgres sink used before its route started",
            ));
        };
        let client = conn.client().await.map_err(DeliveryError::retryable)?;
        let mut row = serde_json::Map::new();
        for (name, spec) in &self.columns {
            row.insert(name.clone(), spec.value(msg));
        }
        let row = Value::Object(row);
        let params: [&(dyn ToSql + Sync); 1] = [&row];
        match tokio::time::timeout(self.timeout, client.execute(self.sql.as_str(), &params)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(db_error(&format!("insert into `{}`", self.table), &e)),
            Err(_) => Err(DeliveryError::retryable(format!(
                "insert into `{}`: no answer within {:?}",
                self.table, self.timeout
            ))),
        }
    }

    fn describe(&self) -> String {
        format!("postgres table {} on {}", self.table, self.settings.shown())
    }
}

// ---------------------------------------------------------------- source

/// Options of a `postgres` source.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresSourceConfig {
    /// Query selecting rows not yet marked, e.g.
    /// `SELECT id, payload FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT 100`.
    pub query: String,
    /// Column that identifies a row; its value is `$1` of `mark`.
    pub key: String,
    /// Statement run once a row is handled, with the key as `$1`, e.g.
    /// `UPDATE outbox SET sent_at = now() WHERE id = $1` or a `DELETE`.
    pub mark: String,
    /// Channel to `LISTEN` on: a `NOTIFY` runs the query at once instead of
    /// at the next `interval`.
    pub listen: Option<String>,
    /// Poll period (default 1s; with `listen` a safety net, e.g. 30s).
    pub interval: Option<HumanDuration>,
    /// Wait before a row whose delivery failed is handed out again (default 5s).
    pub retry_delay: Option<HumanDuration>,
    /// The body: the whole row as a JSON object (default), or the value of
    /// this column (text as it is, json/jsonb as JSON).
    pub body_column: Option<String>,
    /// Database URL (instead of, or overriding, the connector's).
    pub url: Option<String>,
    /// Connector file of kind `postgres`.
    #[schemars(with = "Option<String>")]
    pub connector: Option<Spanned<String>>,
}

impl PostgresSourceConfig {
    pub fn build(&self, loc: &Location, ctx: &BuildContext) -> Result<PostgresSource, ConfigError> {
        let settings = Settings::resolve(&self.url, &self.connector, loc, ctx)?;
        let query = self.query.trim().trim_end_matches(';').to_string();
        if query.is_empty() || self.mark.trim().is_empty() || self.key.is_empty() {
            return Err(ctx.error(loc, "postgres source needs `query`, `key` and `mark`"));
        }
        if !self.mark.contains("$1") {
            return Err(ctx.error(loc, "postgres.mark must use `$1` (the row's key)"));
        }
        let listen =
            match &self.listen {
                Some(ch) => Some(quote_ident(ch).filter(|_| !ch.contains('.')).ok_or_else(
                    || {
                        ctx.error(
                            loc,
                            format!("postgres.listen `{ch}` is not a plain identifier"),
                        )
                    },
                )?),
                None => None,
            };
        Ok(PostgresSource {
            settings,
            query: format!("SELECT row_to_json(ferry_rows)::text FROM ({query}) AS ferry_rows"),
            key: self.key.clone(),
            mark: self.mark.clone(),
            listen,
            interval: or_default(self.interval, Duration::from_secs(1)),
            retry_delay: or_default(self.retry_delay, Duration::from_secs(5)),
            body_column: self.body_column.clone(),
        })
    }
}

pub struct PostgresSource {
    settings: Settings,
    query: String,
    key: String,
    mark: String,
    listen: Option<String>,
    interval: Duration,
    retry_delay: Duration,
    body_column: Option<String>,
}

/// What became of a row handed out, by key.
#[derive(Clone, Copy)]
enum Taken {
    InFlight,
    /// Failed: not before this instant.
    Failed(tokio::time::Instant),
    /// Marked at this instant. Kept a while because a poll that ran before
    /// the mark committed may still hold the row.
    Marked(tokio::time::Instant),
}

/// How long a marked key is remembered (longer than any poll takes).
const MARKED_MEMORY: Duration = Duration::from_secs(60);

type TakenRows = Arc<Mutex<HashMap<String, Taken>>>;

/// The row key as the parameter type `mark` expects.
fn key_param(ty: &Type, key: &Value) -> Result<Box<dyn ToSql + Send + Sync>, String> {
    let text = match key {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let bad = |e: std::num::ParseIntError| format!("key `{text}` is not a {ty}: {e}");
    Ok(match *ty {
        Type::INT2 => Box::new(text.parse::<i16>().map_err(bad)?),
        Type::INT4 => Box::new(text.parse::<i32>().map_err(bad)?),
        Type::INT8 => Box::new(text.parse::<i64>().map_err(bad)?),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => Box::new(text),
        Type::JSON | Type::JSONB => Box::new(key.clone()),
        _ => {
            return Err(format!(
                "mark's $1 is of type {ty}; cast it, e.g. `WHERE id = $1::text::{ty}`"
            ));
        }
    })
}

impl PostgresSource {
    async fn session(
        &self,
        ctx: &mut SourceContext,
        in_flight: &InFlight,
        taken: &TakenRows,
        started: &mut bool,
    ) -> Result<(), String> {
        let (tx, mut notified) = mpsc::channel::<String>(1);
        let client = Arc::new(self.settings.connect(Some(tx)).await?);
        let query = client
            .prepare(&self.query)
            .await
            .map_err(|e| db_error("cannot prepare the query", &e).message)?;
        let mark = client
            .prepare(&self.mark)
            .await
            .map_err(|e| db_error("cannot prepare `mark`", &e).message)?;
        let key_type = mark.params().first().cloned().unwrap_or(Type::TEXT);
        // Rows settled: the next poll may find new ones behind them.
        let settled = Arc::new(tokio::sync::Notify::new());
        if let Some(ch) = &self.listen {
            client
                .batch_execute(&format!("LISTEN {ch}"))
                .await
                .map_err(|e| db_error("LISTEN", &e).message)?;
        }
        if !*started {
            *started = true;
            ctx.ready();
        }
        loop {
            let rows = client
                .query(&query, &[])
                .await
                .map_err(|e| format!("query: {e}"))?;
            taken
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|_, t| !matches!(t, Taken::Marked(at) if at.elapsed() > MARKED_MEMORY));
            let mut submitted = 0usize;
            for row in rows {
                let text: String = row.try_get(0).map_err(|e| format!("query row: {e}"))?;
                let record: Value =
                    serde_json::from_str(&text).map_err(|e| format!("query row: {e}"))?;
                let Some(key) = record.get(&self.key).filter(|k| !k.is_null()).cloned() else {
                    return Err(format!(
                        "the query's rows have no `{}` column (the `key`)",
                        self.key
                    ));
                };
                let key_text = key.to_string();
                {
                    let mut t = taken.lock().unwrap_or_else(|p| p.into_inner());
                    match t.get(&key_text) {
                        Some(Taken::InFlight | Taken::Marked(_)) => continue,
                        Some(Taken::Failed(until)) if *until > tokio::time::Instant::now() => {
                            continue;
                        }
                        _ => {}
                    }
                    t.insert(key_text.clone(), Taken::InFlight);
                }
                let param = match key_param(&key_type, &key) {
                    Ok(p) => p,
                    Err(e) => return Err(e),
                };
                let body = match &self.body_column {
                    None => Body::Json(record.clone()),
                    Some(col) => match record.get(col) {
                        Some(Value::String(s)) => Body::Bytes(bytes::Bytes::from(s.clone())),
                        Some(v) => Body::Json(v.clone()),
                        None => Body::Json(Value::Null),
                    },
                };
                let mut msg = Message::new(ctx.route_id.clone(), self.describe(), body);
                msg.headers.insert(
                    "postgres.key".into(),
                    match &key {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    },
                );
                let rx = tokio::select! {
                    _ = ctx.shutdown.cancelled() => return Ok(()),
                    r = ctx.input.submit(msg) => match r { Ok(rx) => rx, Err(_) => return Ok(()) },
                };
                submitted += 1;
                let (client, mark, taken) = (client.clone(), mark.clone(), taken.clone());
                let settled = settled.clone();
                let (route, delay) = (ctx.route_id.clone(), self.retry_delay);
                in_flight.settle(rx, move |outcome| async move {
                    let now = tokio::time::Instant::now();
                    let next = if outcome.is_handled() {
                        let params: [&(dyn ToSql + Sync); 1] = [&*param];
                        match client.execute(&mark, &params).await {
                            Ok(_) => Taken::Marked(now),
                            Err(e) => {
                                tracing::warn!(route = %route, key = %key_text, error = %e, "postgres: cannot mark a delivered row; it will be delivered again");
                                Taken::Failed(now)
                            }
                        }
                    } else {
                        tracing::debug!(route = %route, key = %key_text, error = %failure_text(&outcome), "postgres: row failed; retried later");
                        Taken::Failed(now + delay)
                    };
                    taken.lock().unwrap_or_else(|p| p.into_inner()).insert(key_text, next);
                    settled.notify_one();
                });
            }
            if client.is_closed() {
                return Err("connection closed".into());
            }
            if submitted > 0 {
                continue;
            }
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                _ = notified.recv() => {}
                _ = settled.notified() => {}
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }
}

#[async_trait]
impl Source for PostgresSource {
    async fn run(&self, mut ctx: SourceContext) -> Result<(), SourceError> {
        let in_flight = InFlight::default();
        let taken: TakenRows = Arc::default();
        let mut backoff = Backoff::new(self.settings.max_backoff);
        let mut started = false;
        loop {
            match self
                .session(&mut ctx, &in_flight, &taken, &mut started)
                .await
            {
                Ok(()) => break,
                Err(e) if !started => return Err(SourceError(e)),
                Err(e) => {
                    let wait = backoff.next_wait();
                    tracing::warn!(route = %ctx.route_id, error = %e, retry_in = ?wait, "postgres source: reconnecting");
                    if !sleep_or_stop(&ctx.shutdown, wait).await {
                        break;
                    }
                }
            }
        }
        in_flight.wait().await;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("postgres poll on {}", self.settings.shown())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_checked_and_quoted() {
        assert_eq!(quote_ident("orders").as_deref(), Some("\"orders\""));
        assert_eq!(
            quote_ident("shop.orders").as_deref(),
            Some("\"shop\".\"orders\"")
        );
        for bad in ["orders; DROP TABLE x", "a\"b", "1abc", "a.b.c", ""] {
            assert!(quote_ident(bad).is_none(), "{bad}");
        }
    }
}
