//! `redis`: streams (consumer groups), lists (reliable queue) and pub/sub,
//! over the redis crate.
//!
//! **Invariant (streams):** an entry read with `XREADGROUP` stays in the
//! group's pending list until the route's outcome says handled; only then is
//! it `XACK`ed. A failed entry is left pending; `XAUTOCLAIM` takes entries
//! idle longer than `claim_idle` (this consumer's failures, or entries of a
//! consumer that died) and hands them to the route again. On start the source
//! first re-reads its own pending entries (those of a previous run under the
//! same consumer name, e.g. after `kill -9`).
//!
//! **Lists** (`BLMOVE` reliable queue): an element is moved atomically to a
//! processing list owned by this consumer, and removed from it only when
//! handled; a failed element is moved back to the queue after
//! `retry_delay`; on start, elements left in the processing list by a previous
//! run go back to the queue first.
//!
//! **Pub/sub** has no acknowledgement: a message that fails is lost.
//!
//! **Connections.** One multiplexed connection per server (URL + TLS) is
//! shared by all routes for acks, sinks and non-blocking commands; it
//! reconnects by itself. Each consuming source also holds its own connection
//! for its blocking reads, because a blocking command would stall every other
//! command on a shared one; it is re-opened with backoff when it breaks.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamAutoClaimOptions, StreamId, StreamReadOptions, StreamReadReply};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::broker::{
    Backoff, BrokerConnector, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_BACKOFF, InFlight, Pool,
    TlsOptions, failure_text, host_name, or_default, redact_url, resolve_endpoint, sleep_or_stop,
    with_timeout,
};
use super::{DeliveryError, Resources, Sink, Source, SourceContext, SourceError};
use crate::config::{BuildContext, ConfigError, HumanDuration};
use crate::connectors::ConnectorConfig;
use crate::message::{Body, Message};
use crate::template::Template;

/// Shared Redis settings in `connectors/NAME.yaml` (`kind: redis`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisConnectorConfig {
    /// `redis://[USER:PASSWORD@]HOST:6379/DB`; `rediss://` for TLS.
    pub url: String,
    /// How long connecting may take before it fails (default 5s).
    pub connect_timeout: Option<HumanDuration>,
    /// Longest wait between reconnect attempts (default 30s).
    pub max_backoff: Option<HumanDuration>,
    /// TLS settings (for `rediss://`): `ca_file`, `cert_file`, `key_file`.
    #[serde(default)]
    pub tls: TlsOptions,
}

impl BrokerConnector for RedisConnectorConfig {
    const KIND: &'static str = "redis";
    fn from_config(c: &ConnectorConfig) -> Option<&Self> {
        match c {
            ConnectorConfig::Redis(c) => Some(c),
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
        let (conn, url) = resolve_endpoint::<RedisConnectorConfig>(url, connector, loc, ctx)?;
        if let Err(e) = redis::Client::open(url.as_str()) {
            return Err(ctx.error(loc, format!("redis url `{}`: {e}", redact_url(&url))));
        }
        let tls: TlsOptions = conn.map(|c| c.tls.clone()).unwrap_or_default();
        // TLS settings on a `redis://` URL mean TLS: never fall back to plain
        // text silently.
        let wants_tls = tls.enabled || tls.ca_file.is_some() || tls.cert_file.is_some();
        let url = match url.strip_prefix("redis://") {
            Some(rest) if wants_tls => format!("rediss://{rest}"),
            _ => url,
        };
        Ok(Settings {
            url,
            tls,
            connect_timeout: or_default(
                conn.and_then(|c| c.connect_timeout),
                DEFAULT_CONNECT_TIMEOUT,
            ),
            max_backoff: or_default(conn.and_then(|c| c.max_backoff), DEFAULT_MAX_BACKOFF),
        })
    }

    fn client(&self) -> Result<redis::Client, String> {
        let shown = redact_url(&self.url);
        let t = &self.tls;
        if t.ca_file.is_none() && t.cert_file.is_none() {
            return redis::Client::open(self.url.as_str())
                .map_err(|e| format!("redis {shown}: {e}"));
        }
        let root_cert = match &t.ca_file {
            Some(p) => Some(TlsOptions::read(p).map_err(|e| e.to_string())?),
            None => None,
        };
        let client_tls = match (&t.cert_file, &t.key_file) {
            (Some(c), Some(k)) => Some(redis::ClientTlsConfig {
                client_cert: TlsOptions::read(c).map_err(|e| e.to_string())?,
                client_key: TlsOptions::read(k).map_err(|e| e.to_string())?,
            }),
            (None, None) => None,
            _ => return Err("tls: `cert_file` and `key_file` go together".into()),
        };
        redis::Client::build_with_tls(
            self.url.as_str(),
            redis::TlsCertificates {
                client_tls,
                root_cert,
            },
        )
        .map_err(|e| format!("redis {shown}: {e}"))
    }

    fn shown(&self) -> String {
        redact_url(&self.url)
    }
}

/// The Redis connections shared by all routes.
#[derive(Default)]
pub struct RedisConnections {
    pool: Pool<RedisConnection>,
}

impl RedisConnections {
    fn get(&self, s: &Settings) -> Arc<RedisConnection> {
        self.pool
            .get_or_insert(&format!("{}|{:?}", s.url, s.tls), || RedisConnection {
                settings: s.clone(),
                manager: tokio::sync::OnceCell::new(),
            })
    }
}

/// The shared connection of one server: a self-reconnecting manager.
pub struct RedisConnection {
    settings: Settings,
    manager: tokio::sync::OnceCell<ConnectionManager>,
}

/// Make Redis's refusals say what to fix.
fn explain(e: String) -> String {
    if e.contains("WRONGPASS") || e.contains("NOAUTH") || e.contains("AUTH") {
        format!("{e} (check the user and password in the url)")
    } else {
        super::broker::explain_certificate(e)
    }
}

impl RedisConnection {
    async fn manager(&self) -> Result<ConnectionManager, String> {
        self.manager
            .get_or_try_init(|| async {
                let s = &self.settings;
                let client = s.client()?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(s.connect_timeout))
                    .set_response_timeout(Some(Duration::from_secs(10)))
                    .set_max_delay(s.max_backoff);
                with_timeout(
                    s.connect_timeout + Duration::from_secs(1),
                    &format!("cannot connect to redis {}", s.shown()),
                    ConnectionManager::new_with_config(client, config),
                )
                .await
                .map_err(explain)
            })
            .await
            .cloned()
    }

    /// A connection of its own, for blocking reads.
    async fn dedicated(&self, block: Duration) -> Result<MultiplexedConnection, String> {
        let s = &self.settings;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(s.connect_timeout))
            .set_response_timeout(Some(block + Duration::from_secs(10)));
        let client = s.client()?;
        with_timeout(
            s.connect_timeout + Duration::from_secs(1),
            &format!("cannot connect to redis {}", s.shown()),
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(explain)
    }
}

fn value_bytes(v: &redis::Value) -> Option<Vec<u8>> {
    match v {
        redis::Value::BulkString(b) => Some(b.clone()),
        redis::Value::SimpleString(s) => Some(s.clone().into_bytes()),
        redis::Value::Int(i) => Some(i.to_string().into_bytes()),
        redis::Value::Double(d) => Some(d.to_string().into_bytes()),
        _ => None,
    }
}

// ---------------------------------------------------------------- source

/// Where a message starts from a stream group.
#[derive(Debug, Default, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupStart {
    /// The whole stream (default): nothing already in it is missed.
    #[default]
    Beginning,
    /// Only entries added after the group is created.
    New,
}

/// Options of a `redis` source. Exactly one of `stream`, `list`, `channel`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisSourceConfig {
    /// Stream key to read with a consumer group.
    pub stream: Option<String>,
    /// List key to consume as a reliable queue (producers `LPUSH`).
    pub list: Option<String>,
    /// Pub/sub channel; a pattern (`PSUBSCRIBE`) when it contains `*`, `?` or `[`.
    pub channel: Option<String>,
    /// Stream: consumer group name, created when missing (default `ferry`).
    pub group: Option<String>,
    /// Stream/list: this instance's consumer name (default: the host name).
    /// Must be unique among instances sharing the group or list and stable
    /// across restarts, so a restarted Ferry finds its own pending entries.
    pub consumer: Option<String>,
    /// Stream: where a newly created group starts (`beginning` or `new`).
    #[serde(default)]
    pub start: GroupStart,
    /// Stream: entries read at once (default 64).
    pub batch: Option<usize>,
    /// Stream: pending entries idle this long are claimed and retried: failed
    /// ones, and those of dead consumers (default 30s).
    pub claim_idle: Option<HumanDuration>,
    /// Stream: the field holding the body (default `body`). Other fields
    /// become headers.
    pub body_field: Option<String>,
    /// Stream: delete each entry (`XDEL`) once it is acked (default false).
    #[serde(default)]
    pub delete_after_ack: bool,
    /// List: wait before a failed element goes back to the queue (default 1s).
    pub retry_delay: Option<HumanDuration>,
    /// Server URL (instead of, or overriding, the connector's).
    pub url: Option<String>,
    /// Connector file of kind `redis`.
    #[schemars(with = "Option<String>")]
    pub connector: Option<Spanned<String>>,
}

impl RedisSourceConfig {
    pub fn build(&self, loc: &Location, ctx: &BuildContext) -> Result<RedisSource, ConfigError> {
        let settings = Settings::resolve(&self.url, &self.connector, loc, ctx)?;
        let consumer = self.consumer.clone().unwrap_or_else(host_name);
        let mode = match (&self.stream, &self.list, &self.channel) {
            (Some(s), None, None) => Mode::Stream {
                key: s.clone(),
                group: self.group.clone().unwrap_or_else(|| "ferry".into()),
                start: self.start,
                batch: self.batch.unwrap_or(64).max(1),
                claim_idle: or_default(self.claim_idle, Duration::from_secs(30)),
                body_field: self.body_field.clone().unwrap_or_else(|| "body".into()),
                delete_after_ack: self.delete_after_ack,
            },
            (None, Some(l), None) => Mode::List {
                key: l.clone(),
                processing: format!("{l}:processing:{consumer}"),
                retry_delay: or_default(self.retry_delay, Duration::from_secs(1)),
            },
            (None, None, Some(c)) => Mode::PubSub {
                channel: c.clone(),
                pattern: c.contains(['*', '?', '[']),
            },
            _ => {
                return Err(ctx.error(
                    loc,
                    "redis source needs exactly one of `stream`, `list` or `channel`",
                ));
            }
        };
        Ok(RedisSource {
            settings,
            consumer,
            mode,
        })
    }
}

enum Mode {
    Stream {
        key: String,
        group: String,
        start: GroupStart,
        batch: usize,
        claim_idle: Duration,
        body_field: String,
        delete_after_ack: bool,
    },
    List {
        key: String,
        processing: String,
        retry_delay: Duration,
    },
    PubSub {
        channel: String,
        pattern: bool,
    },
}

pub struct RedisSource {
    settings: Settings,
    consumer: String,
    mode: Mode,
}

/// How long a blocking read waits before the loop looks at shutdown and claims.
const BLOCK: Duration = Duration::from_secs(1);

/// Entry ids this source handed to the route and not yet settled, so a claim
/// never hands the same entry out twice while it is in flight.
type Busy = Arc<Mutex<HashSet<String>>>;

impl RedisSource {
    fn entry_message(
        &self,
        ctx: &SourceContext,
        key: &str,
        body_field: &str,
        e: &StreamId,
    ) -> Message {
        let body = e
            .map
            .get(body_field)
            .and_then(value_bytes)
            .unwrap_or_default();
        let mut msg = Message::new(
            ctx.route_id.clone(),
            format!("redis stream {key}"),
            Body::Bytes(bytes::Bytes::from(body)),
        );
        for (k, v) in &e.map {
            if k == body_field {
                continue;
            }
            if let Some(b) = value_bytes(v) {
                msg.headers.insert(
                    k.to_ascii_lowercase(),
                    String::from_utf8_lossy(&b).into_owned(),
                );
            }
        }
        msg.headers.insert("redis.stream".into(), key.to_string());
        msg.headers.insert("redis.id".into(), e.id.clone());
        msg
    }

    /// Create the group if missing; a missing stream is created empty.
    async fn ensure_group(&self, con: &mut MultiplexedConnection) -> Result<(), String> {
        let Mode::Stream {
            key, group, start, ..
        } = &self.mode
        else {
            return Ok(());
        };
        let id = match start {
            GroupStart::Beginning => "0",
            GroupStart::New => "$",
        };
        match con
            .xgroup_create_mkstream::<_, _, _, ()>(key, group, id)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.to_string().contains("BUSYGROUP") => Ok(()),
            Err(e) => Err(explain(format!(
                "cannot create group `{group}` on stream `{key}`: {e}"
            ))),
        }
    }

    /// Submit entries; returns false when the route stops taking input.
    async fn submit_entries(
        &self,
        ctx: &SourceContext,
        entries: Vec<StreamId>,
        shared: &RedisConnection,
        in_flight: &InFlight,
        busy: &Busy,
    ) -> bool {
        let Mode::Stream {
            key,
            group,
            body_field,
            delete_after_ack,
            ..
        } = &self.mode
        else {
            return false;
        };
        for e in entries {
            if !busy
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(e.id.clone())
            {
                continue;
            }
            let msg = self.entry_message(ctx, key, body_field, &e);
            let rx = tokio::select! {
                _ = ctx.shutdown.cancelled() => { busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&e.id); return false; }
                r = ctx.input.submit(msg) => match r {
                    Ok(rx) => rx,
                    Err(_) => { busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&e.id); return false; }
                },
            };
            let manager = shared.manager().await;
            let (key, group, id, del) =
                (key.clone(), group.clone(), e.id.clone(), *delete_after_ack);
            let (route, busy) = (ctx.route_id.clone(), busy.clone());
            in_flight.settle(rx, move |outcome| async move {
                if outcome.is_handled() {
                    let acked = async {
                        let mut m = manager?;
                        let _: usize = m.xack(&key, &group, &[&id]).await.map_err(|e| e.to_string())?;
                        if del {
                            let _: usize = m.xdel(&key, &[&id]).await.map_err(|e| e.to_string())?;
                        }
                        Ok::<(), String>(())
                    }
                    .await;
                    if let Err(e) = acked {
                        tracing::warn!(route = %route, entry = %id, error = %e, "redis: XACK failed; the entry stays pending and is claimed again");
                    }
                } else {
                    tracing::debug!(route = %route, entry = %id, error = %failure_text(&outcome), "redis: entry left pending for a retry");
                }
                busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            });
        }
        true
    }

    /// One connected session of a stream source; Ok(()) when asked to stop.
    async fn stream_session(
        &self,
        ctx: &mut SourceContext,
        shared: &RedisConnection,
        in_flight: &InFlight,
        busy: &Busy,
        started: &mut bool,
    ) -> Result<(), String> {
        let Mode::Stream {
            key,
            group,
            batch,
            claim_idle,
            ..
        } = &self.mode
        else {
            return Ok(());
        };
        let mut con = shared.dedicated(BLOCK).await?;
        self.ensure_group(&mut con).await?;
        shared.manager().await?;
        if !*started {
            *started = true;
            ctx.ready();
        }
        // Entries a previous run of this consumer read and never acked.
        let own = StreamReadOptions::default()
            .group(group, &self.consumer)
            .count(*batch);
        let mut from = "0".to_string();
        loop {
            let reply: Option<StreamReadReply> = con
                .xread_options(&[key], &[&from], &own)
                .await
                .map_err(|e| format!("XREADGROUP (own pending): {e}"))?;
            let entries: Vec<StreamId> = reply
                .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
                .unwrap_or_default();
            let Some(last) = entries.last() else { break };
            from = last.id.clone();
            if !self
                .submit_entries(ctx, entries, shared, in_flight, busy)
                .await
            {
                return Ok(());
            }
        }
        let read = StreamReadOptions::default()
            .group(group, &self.consumer)
            .count(*batch)
            .block(BLOCK.as_millis() as usize);
        let claim_every =
            (*claim_idle / 2).clamp(Duration::from_millis(200), Duration::from_secs(10));
        let mut last_claim = tokio::time::Instant::now();
        loop {
            if ctx.shutdown.is_cancelled() {
                return Ok(());
            }
            if last_claim.elapsed() >= claim_every {
                last_claim = tokio::time::Instant::now();
                let mut start = "0-0".to_string();
                loop {
                    let reply: redis::streams::StreamAutoClaimReply = con
                        .xautoclaim_options(
                            key,
                            group,
                            &self.consumer,
                            claim_idle.as_millis() as u64,
                            &start,
                            StreamAutoClaimOptions::default().count(*batch),
                        )
                        .await
                        .map_err(|e| format!("XAUTOCLAIM: {e}"))?;
                    let done = reply.next_stream_id == "0-0" || reply.claimed.is_empty();
                    start = reply.next_stream_id.clone();
                    if !self
                        .submit_entries(ctx, reply.claimed, shared, in_flight, busy)
                        .await
                    {
                        return Ok(());
                    }
                    if done {
                        break;
                    }
                }
            }
            let (keys, ids) = ([key], [">"]);
            let reply: Option<StreamReadReply> = tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                r = con.xread_options(&keys, &ids, &read) => r.map_err(|e| format!("XREADGROUP: {e}"))?,
            };
            let entries: Vec<StreamId> = reply
                .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
                .unwrap_or_default();
            if !self
                .submit_entries(ctx, entries, shared, in_flight, busy)
                .await
            {
                return Ok(());
            }
        }
    }

    async fn list_session(
        &self,
        ctx: &mut SourceContext,
        shared: &RedisConnection,
        in_flight: &InFlight,
        started: &mut bool,
    ) -> Result<(), String> {
        let Mode::List {
            key,
            processing,
            retry_delay,
        } = &self.mode
        else {
            return Ok(());
        };
        let mut con = shared.dedicated(BLOCK).await?;
        shared.manager().await?;
        // A previous run's unfinished elements go back to the queue first.
        loop {
            let moved: Option<Vec<u8>> = redis::cmd("LMOVE")
                .arg(processing)
                .arg(key)
                .arg("LEFT")
                .arg("RIGHT")
                .query_async(&mut con)
                .await
                .map_err(|e| explain(format!("LMOVE {processing} → {key}: {e}")))?;
            if moved.is_none() {
                break;
            }
        }
        if !*started {
            *started = true;
            ctx.ready();
        }
        loop {
            let mut blmove = redis::cmd("BLMOVE");
            blmove
                .arg(key)
                .arg(processing)
                .arg("RIGHT")
                .arg("LEFT")
                .arg(BLOCK.as_secs_f64());
            let item: Option<Vec<u8>> = tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                r = blmove.query_async(&mut con) => r.map_err(|e| format!("BLMOVE: {e}"))?,
            };
            let Some(item) = item else { continue };
            let mut msg = Message::new(
                ctx.route_id.clone(),
                format!("redis list {key}"),
                Body::Bytes(bytes::Bytes::from(item.clone())),
            );
            msg.headers.insert("redis.list".into(), key.clone());
            let rx = tokio::select! {
                // Left in the processing list: the next start moves it back.
                _ = ctx.shutdown.cancelled() => return Ok(()),
                r = ctx.input.submit(msg) => match r { Ok(rx) => rx, Err(_) => return Ok(()) },
            };
            let manager = shared.manager().await;
            let (key, processing, delay) = (key.clone(), processing.clone(), *retry_delay);
            let route = ctx.route_id.clone();
            in_flight.settle(rx, move |outcome| async move {
                let handled = outcome.is_handled();
                if !handled {
                    tracing::debug!(route = %route, error = %failure_text(&outcome), "redis list: element goes back to the queue");
                    tokio::time::sleep(delay).await;
                }
                let result = async {
                    let mut m = manager?;
                    let mut pipe = redis::pipe();
                    pipe.atomic().lrem(&processing, 1, &item).ignore();
                    if !handled {
                        pipe.rpush(&key, &item).ignore();
                    }
                    pipe.query_async::<()>(&mut m).await.map_err(|e| e.to_string())
                }
                .await;
                if let Err(e) = result {
                    tracing::warn!(route = %route, error = %e, "redis list: cannot settle an element; it stays in the processing list until the next start");
                }
            });
        }
    }

    async fn pubsub_session(
        &self,
        ctx: &mut SourceContext,
        shared: &RedisConnection,
        in_flight: &InFlight,
        started: &mut bool,
    ) -> Result<(), String> {
        let Mode::PubSub { channel, pattern } = &self.mode else {
            return Ok(());
        };
        let client = shared.settings.client()?;
        let mut pubsub = with_timeout(
            shared.settings.connect_timeout,
            &format!("cannot connect to redis {}", shared.settings.shown()),
            client.get_async_pubsub(),
        )
        .await
        .map_err(explain)?;
        let subscribed = if *pattern {
            pubsub.psubscribe(channel).await
        } else {
            pubsub.subscribe(channel).await
        };
        subscribed.map_err(|e| explain(format!("SUBSCRIBE {channel}: {e}")))?;
        if !*started {
            *started = true;
            ctx.ready();
        }
        let mut messages = pubsub.on_message();
        loop {
            let m = tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                m = messages.next() => m,
            };
            let Some(m) = m else {
                return Err("pub/sub connection closed".into());
            };
            let mut msg = Message::new(
                ctx.route_id.clone(),
                format!("redis channel {channel}"),
                Body::Bytes(bytes::Bytes::copy_from_slice(m.get_payload_bytes())),
            );
            msg.headers
                .insert("redis.channel".into(), m.get_channel_name().to_string());
            let rx = tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                r = ctx.input.submit(msg) => match r { Ok(rx) => rx, Err(_) => return Ok(()) },
            };
            let route = ctx.route_id.clone();
            in_flight.settle(rx, move |outcome| async move {
                if !outcome.is_handled() {
                    tracing::warn!(route = %route, error = %failure_text(&outcome), "redis pub/sub: message failed and cannot be redelivered");
                }
            });
        }
    }
}

#[async_trait]
impl Source for RedisSource {
    async fn run(&self, mut ctx: SourceContext) -> Result<(), SourceError> {
        let shared = ctx.resources.redis.get(&self.settings);
        let in_flight = InFlight::default();
        let busy: Busy = Arc::default();
        let mut backoff = Backoff::new(self.settings.max_backoff);
        let mut started = false;
        loop {
            let was_started = started;
            let result = match &self.mode {
                Mode::Stream { .. } => {
                    self.stream_session(&mut ctx, &shared, &in_flight, &busy, &mut started)
                        .await
                }
                Mode::List { .. } => {
                    self.list_session(&mut ctx, &shared, &in_flight, &mut started)
                        .await
                }
                Mode::PubSub { .. } => {
                    self.pubsub_session(&mut ctx, &shared, &in_flight, &mut started)
                        .await
                }
            };
            match result {
                Ok(()) => break,
                Err(e) if !started => return Err(SourceError(e)),
                Err(e) => {
                    if was_started || started {
                        backoff.reset();
                    }
                    let wait = backoff.next_wait();
                    tracing::warn!(route = %ctx.route_id, error = %e, retry_in = ?wait, "redis source: connection lost; reconnecting");
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
        let what = match &self.mode {
            Mode::Stream { key, group, .. } => format!("stream {key} (group {group})"),
            Mode::List { key, .. } => format!("list {key}"),
            Mode::PubSub { channel, .. } => format!("channel {channel}"),
        };
        format!("redis {what} on {}", self.settings.shown())
    }
}

// ---------------------------------------------------------------- sink

/// Options of a `redis` sink. Exactly one of `stream`, `list`, `channel`
/// (each a template, e.g. `orders:{header.region}`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisSinkConfig {
    /// `XADD` to this stream: the body in `body_field`, headers as other fields.
    pub stream: Option<String>,
    /// `LPUSH` the body onto this list (a `list` source reads it in order).
    pub list: Option<String>,
    /// `PUBLISH` the body on this channel.
    pub channel: Option<String>,
    /// Stream: trim to about this many entries (`MAXLEN ~`).
    pub maxlen: Option<usize>,
    /// Stream: the field that holds the body (default `body`).
    pub body_field: Option<String>,
    /// Stream: write the message's headers as fields (default true).
    #[serde(default = "yes")]
    pub forward_headers: bool,
    /// Server URL (instead of, or overriding, the connector's).
    pub url: Option<String>,
    /// Connector file of kind `redis`.
    #[schemars(with = "Option<String>")]
    pub connector: Option<Spanned<String>>,
}

fn yes() -> bool {
    true
}

enum SinkMode {
    Stream(Template),
    List(Template),
    Channel(Template),
}

impl RedisSinkConfig {
    pub fn build(&self, loc: &Location, ctx: &BuildContext) -> Result<RedisSink, ConfigError> {
        let settings = Settings::resolve(&self.url, &self.connector, loc, ctx)?;
        let t = |s: &String| Template::parse(s).map_err(|e| ctx.error(loc, format!("redis: {e}")));
        let mode = match (&self.stream, &self.list, &self.channel) {
            (Some(s), None, None) => SinkMode::Stream(t(s)?),
            (None, Some(l), None) => SinkMode::List(t(l)?),
            (None, None, Some(c)) => SinkMode::Channel(t(c)?),
            _ => {
                return Err(ctx.error(
                    loc,
                    "redis sink needs exactly one of `stream`, `list` or `channel`",
                ));
            }
        };
        Ok(RedisSink {
            settings,
            mode,
            maxlen: self.maxlen,
            body_field: self.body_field.clone().unwrap_or_else(|| "body".into()),
            forward_headers: self.forward_headers,
            manager: OnceLock::new(),
        })
    }
}

pub struct RedisSink {
    settings: Settings,
    mode: SinkMode,
    maxlen: Option<usize>,
    body_field: String,
    forward_headers: bool,
    manager: OnceLock<ConnectionManager>,
}

#[async_trait]
impl Sink for RedisSink {
    async fn start(&self, resources: &Arc<Resources>) -> Result<(), String> {
        let shared = resources.redis.get(&self.settings);
        let mut m = shared.manager().await?;
        // PING surfaces an authentication problem now, not per message.
        redis::cmd("PING")
            .query_async::<()>(&mut m)
            .await
            .map_err(|e| explain(format!("redis {}: {e}", self.settings.shown())))?;
        let _ = self.manager.set(m);
        Ok(())
    }

    async fn deliver(&self, msg: &Message) -> Result<(), DeliveryError> {
        let Some(m) = self.manager.get() else {
            return Err(DeliveryError::retryable(
                "redis sink used before its route started",
            ));
        };
        let mut m = m.clone();
        let body = msg.body.to_bytes();
        let result = match &self.mode {
            SinkMode::Stream(t) => {
                let key = t.render(msg);
                let mut fields: Vec<(String, Vec<u8>)> =
                    vec![(self.body_field.clone(), body.to_vec())];
                if self.forward_headers {
                    for (k, v) in &msg.headers {
                        if !k.starts_with("redis.") && *k != self.body_field {
                            fields.push((k.clone(), v.clone().into_bytes()));
                        }
                    }
                }
                let mut cmd = redis::cmd("XADD");
                cmd.arg(&key);
                if let Some(n) = self.maxlen {
                    cmd.arg("MAXLEN").arg("~").arg(n);
                }
                cmd.arg("*");
                for (k, v) in &fields {
                    cmd.arg(k).arg(v.as_slice());
                }
                cmd.query_async::<String>(&mut m).await.map(|_| ())
            }
            SinkMode::List(t) => m
                .lpush::<_, _, usize>(t.render(msg), body.as_ref())
                .await
                .map(|_| ()),
            SinkMode::Channel(t) => m
                .publish::<_, _, usize>(t.render(msg), body.as_ref())
                .await
                .map(|_| ()),
        };
        result.map_err(|e| {
            let text = explain(format!("redis: {e}"));
            if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError)
                || e.is_unrecoverable_error()
            {
                DeliveryError::permanent(text)
            } else {
                DeliveryError::retryable(text)
            }
        })
    }

    fn describe(&self) -> String {
        let what = match &self.mode {
            SinkMode::Stream(_) => "stream",
            SinkMode::List(_) => "list",
            SinkMode::Channel(_) => "channel",
        };
        format!("redis {what} on {}", self.settings.shown())
    }
}
