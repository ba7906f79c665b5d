//! `redis`: streams (consumer groups), lists (reliable queue) and pub/sub,
//! over the redis crate. One mode per file, source and sink side together,
//! each stating its ack mapping: `streams.rs` (`XREADGROUP` → `XACK` only when
//! handled, failures claimed again), `lists.rs` (`BLMOVE` to a processing list,
//! removed only when handled, failures moved back) and `pubsub.rs` (no
//! acknowledgement: a message that fails is lost). This file holds the config
//! types, the shared settings and connections, and the dispatch from the
//! `Source`/`Sink` traits to the mode.
//!
//! **Connections.** One multiplexed connection per server (URL + TLS) is
//! shared by all routes for acks, sinks and non-blocking commands; it
//! reconnects by itself. Each consuming source also holds its own connection
//! for its blocking reads, because a blocking command would stall every other
//! command on a shared one; it is re-opened with backoff when it breaks.

mod lists;
mod pubsub;
mod streams;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::broker::{
    Backoff, BrokerConnector, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_BACKOFF, InFlight, Pool,
    TlsOptions, host_name, or_default, redact_url, resolve_endpoint, sleep_or_stop, with_timeout,
};
use super::{DeliveryError, Resources, Sink, Source, SourceContext, SourceError};
use crate::config::{BuildContext, ConfigError, HumanDuration};
use crate::connectors::ConnectorConfig;
use crate::message::Message;
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
            (Some(s), None, None) => Mode::Stream(streams::StreamSource {
                key: s.clone(),
                group: self.group.clone().unwrap_or_else(|| "ferry".into()),
                consumer,
                start: self.start,
                batch: self.batch.unwrap_or(64).max(1),
                claim_idle: or_default(self.claim_idle, Duration::from_secs(30)),
                body_field: self.body_field.clone().unwrap_or_else(|| "body".into()),
                delete_after_ack: self.delete_after_ack,
            }),
            (None, Some(l), None) => Mode::List(lists::ListSource {
                key: l.clone(),
                processing: format!("{l}:processing:{consumer}"),
                retry_delay: or_default(self.retry_delay, Duration::from_secs(1)),
            }),
            (None, None, Some(c)) => Mode::PubSub(pubsub::ChannelSource {
                channel: c.clone(),
                pattern: c.contains(['*', '?', '[']),
            }),
            _ => {
                return Err(ctx.error(
                    loc,
                    "redis source needs exactly one of `stream`, `list` or `channel`",
                ));
            }
        };
        Ok(RedisSource { settings, mode })
    }
}

enum Mode {
    Stream(streams::StreamSource),
    List(lists::ListSource),
    PubSub(pubsub::ChannelSource),
}

pub struct RedisSource {
    settings: Settings,
    mode: Mode,
}

/// How long a blocking read waits before the loop looks at shutdown and claims.
const BLOCK: Duration = Duration::from_secs(1);

#[async_trait]
impl Source for RedisSource {
    async fn run(&self, mut ctx: SourceContext) -> Result<(), SourceError> {
        let shared = ctx.resources.redis.get(&self.settings);
        let in_flight = InFlight::default();
        let busy: streams::Busy = Arc::default();
        let mut backoff = Backoff::new(self.settings.max_backoff);
        let mut started = false;
        loop {
            let was_started = started;
            let result = match &self.mode {
                Mode::Stream(s) => {
                    s.session(&mut ctx, &shared, &in_flight, &busy, &mut started)
                        .await
                }
                Mode::List(l) => l.session(&mut ctx, &shared, &in_flight, &mut started).await,
                Mode::PubSub(p) => p.session(&mut ctx, &shared, &in_flight, &mut started).await,
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
            Mode::Stream(s) => format!("stream {} (group {})", s.key, s.group),
            Mode::List(l) => format!("list {}", l.key),
            Mode::PubSub(p) => format!("channel {}", p.channel),
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
    Stream(streams::StreamSink),
    List(Template),
    Channel(Template),
}

impl RedisSinkConfig {
    pub fn build(&self, loc: &Location, ctx: &BuildContext) -> Result<RedisSink, ConfigError> {
        let settings = Settings::resolve(&self.url, &self.connector, loc, ctx)?;
        let t = |s: &String| Template::parse(s).map_err(|e| ctx.error(loc, format!("redis: {e}")));
        let mode = match (&self.stream, &self.list, &self.channel) {
            (Some(s), None, None) => SinkMode::Stream(streams::StreamSink {
                key: t(s)?,
                maxlen: self.maxlen,
                body_field: self.body_field.clone().unwrap_or_else(|| "body".into()),
                forward_headers: self.forward_headers,
            }),
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
            manager: OnceLock::new(),
        })
    }
}

pub struct RedisSink {
    settings: Settings,
    mode: SinkMode,
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
            SinkMode::Stream(s) => s.xadd(&mut m, msg, &body).await,
            SinkMode::List(t) => lists::lpush(&mut m, t, msg, &body).await,
            SinkMode::Channel(t) => pubsub::publish(&mut m, t, msg, &body).await,
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
