//! `amqp`: RabbitMQ (AMQP 0.9.1) source and sink, over lapin.
//!
//! **Invariant:** a delivery is acked on the broker (`basic.ack`) only after
//! the route's outcome says handled. A failed outcome is `basic.nack`ed with
//! `requeue: true` (or `false` with `on_failure: reject`, which sends it to the
//! queue's dead-letter exchange) after `requeue_delay`. Anything not settled
//! when the channel or Ferry dies is requeued by RabbitMQ itself, because
//! unacknowledged deliveries of a closed channel always are.
//!
//! **Connections.** Every endpoint with the same URL and TLS settings shares
//! one AMQP connection (in [`AmqpConnections`]); each source and sink opens its
//! own channel on it, as AMQP intends. When the connection drops, the next
//! user reconnects it with exponential backoff; sources re-declare their
//! topology and consume again. Acks of deliveries from the dead channel are not
//! sent on the new one (a delivery tag belongs to its channel), so nothing is
//! double-acked: RabbitMQ redelivers those messages.
//!
//! **Sink.** Publishes with publisher confirms, persistent delivery mode and
//! `mandatory`, so a message is confirmed only when RabbitMQ has routed and
//! stored it; an unroutable message is a permanent failure.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::broker::{
    Backoff, BrokerConnector, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_BACKOFF, InFlight, Pool,
    TlsOptions, failure_text, or_default, redact_url, resolve_endpoint, sleep_or_stop,
    with_timeout,
};
use super::{DeliveryError, Resources, Sink, Source, SourceContext, SourceError};
use crate::config::{BuildContext, ConfigError, HumanDuration};
use crate::connectors::ConnectorConfig;
use crate::message::{Body, Message};
use crate::template::Template;

/// Shared RabbitMQ settings in `connectors/NAME.yaml` (`kind: amqp`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AmqpConnectorConfig {
    /// Broker URL: `amqp://USER:PASSWORD@HOST:5672/VHOST` (`%2f` is the default
    /// vhost `/`); `amqps://` for TLS. Use `${ENV}` for the password.
    pub url: String,
    /// Unacknowledged deliveries a source may hold (basic.qos; default 64).
    pub prefetch: Option<u16>,
    /// How long connecting may take before it fails (default 5s).
    pub connect_timeout: Option<HumanDuration>,
    /// Longest wait between reconnect attempts (default 30s).
    pub max_backoff: Option<HumanDuration>,
    /// TLS settings (for `amqps://`).
    #[serde(default)]
    pub tls: TlsOptions,
    /// Exchanges, queues and bindings every endpoint of this connector declares
    /// before it consumes or publishes.
    #[serde(default)]
    pub declare: Topology,
}

impl BrokerConnector for AmqpConnectorConfig {
    const KIND: &'static str = "amqp";
    fn from_config(c: &ConnectorConfig) -> Option<&Self> {
        match c {
            ConnectorConfig::Amqp(c) => Some(c),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }
    fn url(&self) -> &str {
        &self.url
    }
}

/// Exchanges, queues and bindings to declare (idempotent: existing ones with
/// the same settings are left alone; different settings are an error from
/// RabbitMQ, reported as such).
#[derive(Debug, Default, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    #[serde(default)]
    pub exchanges: Vec<ExchangeDecl>,
    #[serde(default)]
    pub queues: Vec<QueueDecl>,
    #[serde(default)]
    pub bindings: Vec<BindingDecl>,
}

/// An exchange to declare.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExchangeDecl {
    pub name: String,
    /// `direct` (default), `fanout`, `topic` or `headers`.
    #[serde(default, rename = "type")]
    pub kind: ExchangeType,
    /// Survives a broker restart (default true).
    #[serde(default = "yes")]
    pub durable: bool,
}

#[derive(Debug, Default, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExchangeType {
    #[default]
    Direct,
    Fanout,
    Topic,
    Headers,
}

/// A queue to declare.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueDecl {
    pub name: String,
    /// Survives a broker restart (default true).
    #[serde(default = "yes")]
    pub durable: bool,
    /// Exchange that rejected (`on_failure: reject`) or expired messages go to
    /// (`x-dead-letter-exchange`; `""` is the default exchange).
    pub dead_letter_exchange: Option<String>,
    /// Routing key for dead-lettered messages (`x-dead-letter-routing-key`).
    pub dead_letter_routing_key: Option<String>,
    /// Other queue arguments, e.g. `x-queue-type: quorum`, `x-message-ttl: 60000`.
    #[serde(default)]
    pub arguments: BTreeMap<String, serde_json::Value>,
}

/// A binding of a queue to an exchange.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BindingDecl {
    pub queue: String,
    pub exchange: String,
    /// Binding key (default `""`; patterns like `orders.*` for topic exchanges).
    #[serde(default)]
    pub routing_key: String,
}

fn yes() -> bool {
    true
}

/// The AMQP connections shared by all routes, by URL and TLS settings.
#[derive(Default)]
pub struct AmqpConnections {
    pool: Pool<AmqpConnection>,
}

/// Where and how to connect, resolved from the endpoint and its connector.
#[derive(Debug, Clone)]
struct Settings {
    url: String,
    tls: TlsOptions,
    connect_timeout: Duration,
    max_backoff: Duration,
    prefetch: u16,
    topology: Topology,
}

impl Settings {
    fn resolve(
        url: &Option<String>,
        connector: &Option<Spanned<String>>,
        declare: &Topology,
        loc: &Location,
        ctx: &BuildContext,
    ) -> Result<Settings, ConfigError> {
        let (conn, url) = resolve_endpoint::<AmqpConnectorConfig>(url, connector, loc, ctx)?;
        if let Err(e) = url.parse::<lapin::uri::AMQPUri>() {
            return Err(ctx.error(loc, format!("amqp url `{}`: {e}", redact_url(&url))));
        }
        let mut topology = conn.map(|c| c.declare.clone()).unwrap_or_default();
        topology.exchanges.extend(declare.exchanges.iter().cloned());
        topology.queues.extend(declare.queues.iter().cloned());
        topology.bindings.extend(declare.bindings.iter().cloned());
        for q in &topology.queues {
            for v in q.arguments.values() {
                if amqp_value(v).is_none() {
                    return Err(ctx.error(
                        loc,
                        format!(
                            "queue `{}`: argument values must be strings, numbers or booleans",
                            q.name
                        ),
                    ));
                }
            }
        }
        Ok(Settings {
            url,
            tls: conn.map(|c| c.tls.clone()).unwrap_or_default(),
            connect_timeout: or_default(
                conn.and_then(|c| c.connect_timeout),
                DEFAULT_CONNECT_TIMEOUT,
            ),
            max_backoff: or_default(conn.and_then(|c| c.max_backoff), DEFAULT_MAX_BACKOFF),
            prefetch: conn.and_then(|c| c.prefetch).unwrap_or(64),
            topology,
        })
    }

    fn key(&self) -> String {
        format!("{}|{:?}", self.url, self.tls)
    }
}

/// One AMQP connection, reconnected on demand.
pub struct AmqpConnection {
    settings: Settings,
    conn: tokio::sync::Mutex<Option<Arc<Connection>>>,
}

impl AmqpConnection {
    /// A new channel, reconnecting first if the connection is gone.
    async fn channel(&self) -> Result<Channel, String> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref().filter(|c| c.status().connected()) {
            match c.create_channel().await {
                Ok(ch) => return Ok(ch),
                Err(e) => {
                    tracing::warn!(broker = %redact_url(&self.settings.url), error = %e, "amqp: cannot open a channel; reconnecting")
                }
            }
        }
        *guard = None;
        let conn = Arc::new(self.connect().await?);
        let ch = conn
            .create_channel()
            .await
            .map_err(|e| format!("cannot open a channel: {e}"))?;
        *guard = Some(conn);
        Ok(ch)
    }

    async fn connect(&self) -> Result<Connection, String> {
        let s = &self.settings;
        let where_ = redact_url(&s.url);
        let tls = tls_config(&s.tls).map_err(|e| format!("amqp {where_}: {e}"))?;
        let runtime = lapin::runtime::default_runtime()
            .map_err(|e| format!("amqp {where_}: no runtime: {e}"))?;
        let props = ConnectionProperties::default().with_connection_name(LongString::from(
            format!("ferry@{}", super::broker::host_name()),
        ));
        let conn = with_timeout(
            s.connect_timeout,
            &format!("cannot connect to amqp {where_}"),
            Connection::connect_with_config(&s.url, props, tls, runtime),
        )
        .await
        .map_err(explain_connect_error)?;
        tracing::info!(broker = %where_, "amqp connected");
        Ok(conn)
    }
}

/// Make RabbitMQ's terse refusals (and rustls's certificate errors) say
/// what to fix.
fn explain_connect_error(e: String) -> String {
    if e.contains("ACCESS_REFUSED") || e.contains("access refused") || e.contains("403") {
        format!("{e} (wrong user or password in the url?)")
    } else if e.contains("NOT_ALLOWED") || e.contains("vhost") {
        format!("{e} (does the vhost exist, and may this user use it?)")
    } else {
        super::broker::explain_certificate(e)
    }
}

fn tls_config(t: &TlsOptions) -> Result<lapin::tcp::OwnedTLSConfig, String> {
    let cert_chain = match &t.ca_file {
        Some(p) => Some(
            String::from_utf8(TlsOptions::read(p).map_err(|e| e.to_string())?)
                .map_err(|_| format!("{}: not a PEM text file", p.display()))?,
        ),
        None => None,
    };
    let identity = match (&t.cert_file, &t.key_file) {
        (Some(c), Some(k)) => Some(lapin::tcp::OwnedIdentity::PKCS8 {
            pem: TlsOptions::read(c).map_err(|e| e.to_string())?,
            key: TlsOptions::read(k).map_err(|e| e.to_string())?,
        }),
        (None, None) => None,
        _ => return Err("tls: `cert_file` and `key_file` go together".into()),
    };
    Ok(lapin::tcp::OwnedTLSConfig {
        identity,
        cert_chain,
    })
}

impl AmqpConnections {
    fn get(&self, settings: &Settings) -> Arc<AmqpConnection> {
        self.pool.get_or_insert(&settings.key(), || AmqpConnection {
            settings: settings.clone(),
            conn: tokio::sync::Mutex::new(None),
        })
    }
}

fn amqp_value(v: &serde_json::Value) -> Option<AMQPValue> {
    Some(match v {
        serde_json::Value::String(s) => AMQPValue::LongString(s.as_str().into()),
        serde_json::Value::Bool(b) => AMQPValue::Boolean(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64()?),
        },
        _ => return None,
    })
}

/// Declare the topology on `ch`; errors name the object and RabbitMQ's reason.
async fn declare(ch: &Channel, t: &Topology) -> Result<(), String> {
    for x in &t.exchanges {
        let kind = match x.kind {
            ExchangeType::Direct => ExchangeKind::Direct,
            ExchangeType::Fanout => ExchangeKind::Fanout,
            ExchangeType::Topic => ExchangeKind::Topic,
            ExchangeType::Headers => ExchangeKind::Headers,
        };
        let opts = ExchangeDeclareOptions {
            durable: x.durable,
            ..Default::default()
        };
        ch.exchange_declare(x.name.as_str().into(), kind, opts, FieldTable::default())
            .await
            .map_err(|e| format!("cannot declare exchange `{}`: {e}", x.name))?;
    }
    for q in &t.queues {
        let mut args = FieldTable::default();
        if let Some(dlx) = &q.dead_letter_exchange {
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(dlx.as_str().into()),
            );
        }
        if let Some(rk) = &q.dead_letter_routing_key {
            args.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(rk.as_str().into()),
            );
        }
        for (k, v) in &q.arguments {
            if let Some(v) = amqp_value(v) {
                args.insert(k.as_str().into(), v);
            }
        }
        let opts = QueueDeclareOptions {
            durable: q.durable,
            ..Default::default()
        };
        ch.queue_declare(q.name.as_str().into(), opts, args)
            .await
            .map_err(|e| format!("cannot declare queue `{}`: {e}", q.name))?;
    }
    for b in &t.bindings {
        ch.queue_bind(
            b.queue.as_str().into(),
            b.exchange.as_str().into(),
            b.routing_key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("cannot bind queue `{}` to `{}`: {e}", b.queue, b.exchange))?;
    }
    Ok(())
}

// ---------------------------------------------------------------- source

/// What to do with a message whose outcome is a failure.
#[derive(Debug, Default, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// `basic.nack` with requeue: RabbitMQ delivers it again (default).
    #[default]
    Requeue,
    /// `basic.nack` without requeue: the queue's dead-letter exchange takes it
    /// (RabbitMQ discards it when the queue has none).
    Reject,
}

/// Options of an `amqp` source.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AmqpSourceConfig {
    /// Queue to consume from. It must exist, or be declared under `declare`.
    pub queue: String,
    /// Broker URL (instead of, or overriding, the connector's).
    pub url: Option<String>,
    /// Connector file of kind `amqp`.
    #[schemars(with = "Option<String>")]
    pub connector: Option<Spanned<String>>,
    /// Unacknowledged deliveries held at once (default: the connector's, else 64).
    pub prefetch: Option<u16>,
    /// `requeue` (default) or `reject` (to the queue's dead-letter exchange).
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Wait this long before requeueing a failed message, so a failing
    /// downstream is not hammered (default 1s).
    pub requeue_delay: Option<HumanDuration>,
    /// Exchanges, queues and bindings to declare before consuming.
    #[serde(default)]
    pub declare: Topology,
}

impl AmqpSourceConfig {
    pub fn build(&self, loc: &Location, ctx: &BuildContext) -> Result<AmqpSource, ConfigError> {
        let mut settings = Settings::resolve(&self.url, &self.connector, &self.declare, loc, ctx)?;
        if self.queue.is_empty() {
            return Err(ctx.error(loc, "amqp.queue is empty"));
        }
        if let Some(p) = self.prefetch {
            settings.prefetch = p;
        }
        if settings.prefetch == 0 {
            return Err(ctx.error(loc, "amqp.prefetch must be at least 1"));
        }
        Ok(AmqpSource {
            settings,
            queue: self.queue.clone(),
            on_failure: self.on_failure,
            requeue_delay: or_default(self.requeue_delay, Duration::from_secs(1)),
        })
    }
}

pub struct AmqpSource {
    settings: Settings,
    queue: String,
    on_failure: OnFailure,
    requeue_delay: Duration,
}

/// How a consuming session ended.
enum SessionEnd {
    /// Ferry asked the source to stop.
    Stopped,
    /// The connection or channel broke: reconnect.
    Broken(String),
}

impl AmqpSource {
    /// Open a channel, declare, check the queue and start consuming.
    async fn open(&self, conn: &AmqpConnection) -> Result<(Channel, lapin::Consumer), String> {
        let ch = conn.channel().await?;
        declare(&ch, &self.settings.topology).await?;
        // A passive declare names a missing queue plainly; basic.consume would
        // only close the channel with NOT_FOUND.
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        if let Err(e) = ch
            .queue_declare(self.queue.as_str().into(), passive, FieldTable::default())
            .await
        {
            return Err(format!(
                "queue `{}` does not exist on {} ({e}); create it or declare it under `declare.queues`",
                self.queue,
                redact_url(&self.settings.url)
            ));
        }
        ch.basic_qos(self.settings.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| format!("basic.qos: {e}"))?;
        let consumer = ch
            .basic_consume(
                self.queue.as_str().into(),
                ShortString::from(format!("ferry-{}", uuid::Uuid::now_v7())),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("cannot consume from `{}`: {e}", self.queue))?;
        Ok((ch, consumer))
    }

    async fn consume(
        &self,
        ctx: &SourceContext,
        mut consumer: lapin::Consumer,
        in_flight: &InFlight,
    ) -> SessionEnd {
        loop {
            let delivery = tokio::select! {
                _ = ctx.shutdown.cancelled() => return SessionEnd::Stopped,
                d = consumer.next() => d,
            };
            let delivery = match delivery {
                Some(Ok(d)) => d,
                Some(Err(e)) => return SessionEnd::Broken(e.to_string()),
                None => return SessionEnd::Broken("consumer cancelled by the broker".into()),
            };
            let msg = to_message(ctx, &self.queue, &delivery);
            let rx = tokio::select! {
                // Dropping the delivery unacked: RabbitMQ requeues it when the
                // channel closes.
                _ = ctx.shutdown.cancelled() => return SessionEnd::Stopped,
                r = ctx.input.submit(msg) => match r {
                    Ok(rx) => rx,
                    Err(_) => return SessionEnd::Stopped,
                },
            };
            let acker = delivery.acker;
            let (on_failure, delay) = (self.on_failure, self.requeue_delay);
            let route = ctx.route_id.clone();
            in_flight.settle(rx, move |outcome| async move {
                let result = if outcome.is_handled() {
                    acker.ack(BasicAckOptions::default()).await
                } else {
                    tracing::debug!(route = %route, error = %failure_text(&outcome), "amqp: nack");
                    tokio::time::sleep(delay).await;
                    acker
                        .nack(BasicNackOptions {
                            multiple: false,
                            requeue: on_failure == OnFailure::Requeue,
                        })
                        .await
                };
                if let Err(e) = result {
                    // The channel is gone: RabbitMQ requeues the delivery itself.
                    tracing::debug!(route = %route, error = %e, "amqp: could not settle a delivery (channel closed); the broker redelivers it");
                }
            });
        }
    }
}

fn to_message(ctx: &SourceContext, queue: &str, d: &lapin::message::Delivery) -> Message {
    let mut msg = Message::new(
        ctx.route_id.clone(),
        format!("amqp queue {queue}"),
        Body::Bytes(bytes::Bytes::copy_from_slice(&d.data)),
    );
    let h = &mut msg.headers;
    let p = &d.properties;
    if let Some(headers) = p.headers() {
        for (k, v) in headers.inner() {
            if let Some(v) = header_text(v) {
                h.insert(k.as_str().to_ascii_lowercase(), v);
            }
        }
    }
    if let Some(ct) = p.content_type() {
        h.insert("content-type".into(), ct.to_string());
    }
    let props = [
        ("amqp.message-id", p.message_id()),
        ("amqp.correlation-id", p.correlation_id()),
        ("amqp.reply-to", p.reply_to()),
        ("amqp.type", p.kind()),
        ("amqp.app-id", p.app_id()),
    ];
    for (name, v) in props {
        if let Some(v) = v {
            h.insert(name.into(), v.to_string());
        }
    }
    h.insert("amqp.queue".into(), queue.to_string());
    h.insert("amqp.exchange".into(), d.exchange.to_string());
    h.insert("amqp.routing-key".into(), d.routing_key.to_string());
    h.insert("amqp.redelivered".into(), d.redelivered.to_string());
    msg
}

fn header_text(v: &AMQPValue) -> Option<String> {
    Some(match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.to_string(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Float(n) => n.to_string(),
        AMQPValue::Double(n) => n.to_string(),
        AMQPValue::Timestamp(n) => n.to_string(),
        _ => return None,
    })
}

#[async_trait]
impl Source for AmqpSource {
    async fn run(&self, mut ctx: SourceContext) -> Result<(), SourceError> {
        let conn = ctx.resources.amqp.get(&self.settings);
        let in_flight = InFlight::default();
        let mut backoff = Backoff::new(self.settings.max_backoff);
        let mut started = false;
        loop {
            let opened = self.open(&conn).await;
            let (ch, consumer) = match opened {
                Ok(v) => v,
                Err(e) if !started => return Err(SourceError(e)),
                Err(e) => {
                    let wait = backoff.next_wait();
                    tracing::error!(route = %ctx.route_id, error = %e, retry_in = ?wait, "amqp source: cannot consume; retrying");
                    if !sleep_or_stop(&ctx.shutdown, wait).await {
                        break;
                    }
                    continue;
                }
            };
            if !started {
                started = true;
                ctx.ready();
            } else {
                tracing::info!(route = %ctx.route_id, queue = %self.queue, "amqp source: consuming again");
            }
            backoff.reset();
            match self.consume(&ctx, consumer, &in_flight).await {
                SessionEnd::Stopped => {
                    // Settle what the route has, then close the channel so
                    // prefetched, never-submitted deliveries are requeued.
                    in_flight.wait().await;
                    let _ = ch.close(200, "ferry route stopping".into()).await;
                    break;
                }
                SessionEnd::Broken(e) => {
                    tracing::warn!(route = %ctx.route_id, error = %e, "amqp source: connection lost; reconnecting");
                }
            }
        }
        in_flight.wait().await;
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "amqp queue {} on {}",
            self.queue,
            redact_url(&self.settings.url)
        )
    }
}

// ---------------------------------------------------------------- sink

/// Options of an `amqp` sink.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AmqpSinkConfig {
    /// Exchange to publish to (default `""`, the default exchange, which routes
    /// by queue name).
    #[serde(default)]
    pub exchange: String,
    /// Routing key template, e.g. `orders.{header.region}` or a queue name for
    /// the default exchange. Placeholders as in templates (`{header.NAME}`,
    /// `{body.PATH}`, `{id}`, …).
    pub routing_key: String,
    /// Broker URL (instead of, or overriding, the connector's).
    pub url: Option<String>,
    /// Connector file of kind `amqp`.
    #[schemars(with = "Option<String>")]
    pub connector: Option<Spanned<String>>,
    /// Delivery mode 2, so RabbitMQ writes the message to disk (default true).
    #[serde(default = "yes")]
    pub persistent: bool,
    /// An unroutable message is a failure rather than silently dropped (default true).
    #[serde(default = "yes")]
    pub mandatory: bool,
    /// Content type property; default: the message's `content-type` header, or
    /// `application/json` for JSON bodies.
    pub content_type: Option<String>,
    /// Send the message's headers as AMQP headers (default true). `amqp.*`
    /// headers map to properties instead (`amqp.message-id`,
    /// `amqp.correlation-id`, `amqp.reply-to`, `amqp.type`, `amqp.app-id`).
    #[serde(default = "yes")]
    pub forward_headers: bool,
    /// How long to wait for the broker's confirm (default 30s).
    pub timeout: Option<HumanDuration>,
    /// Exchanges, queues and bindings to declare before publishing.
    #[serde(default)]
    pub declare: Topology,
}

impl AmqpSinkConfig {
    pub fn build(&self, loc: &Location, ctx: &BuildContext) -> Result<AmqpSink, ConfigError> {
        let settings = Settings::resolve(&self.url, &self.connector, &self.declare, loc, ctx)?;
        let routing_key = Template::parse(&self.routing_key)
            .map_err(|e| ctx.error(loc, format!("amqp.routing_key: {e}")))?;
        Ok(AmqpSink {
            settings,
            exchange: self.exchange.clone(),
            routing_key,
            persistent: self.persistent,
            mandatory: self.mandatory,
            content_type: self.content_type.clone(),
            forward_headers: self.forward_headers,
            timeout: or_default(self.timeout, Duration::from_secs(30)),
            conn: OnceLock::new(),
            channel: tokio::sync::Mutex::new(None),
        })
    }
}

pub struct AmqpSink {
    settings: Settings,
    exchange: String,
    routing_key: Template,
    persistent: bool,
    mandatory: bool,
    content_type: Option<String>,
    forward_headers: bool,
    timeout: Duration,
    conn: OnceLock<Arc<AmqpConnection>>,
    /// The confirm-mode channel all deliveries of this sink publish on.
    channel: tokio::sync::Mutex<Option<Channel>>,
}

impl AmqpSink {
    async fn channel(&self) -> Result<Channel, DeliveryError> {
        let Some(conn) = self.conn.get() else {
            return Err(DeliveryError::retryable(
                "amqp sink used before its route started",
            ));
        };
        let mut guard = self.channel.lock().await;
        if let Some(ch) = guard.as_ref().filter(|c| c.status().connected()) {
            return Ok(ch.clone());
        }
        *guard = None;
        let ch = conn.channel().await.map_err(DeliveryError::retryable)?;
        declare(&ch, &self.settings.topology)
            .await
            .map_err(DeliveryError::retryable)?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| DeliveryError::retryable(format!("confirm.select: {e}")))?;
        *guard = Some(ch.clone());
        Ok(ch)
    }

    fn properties(&self, msg: &Message) -> BasicProperties {
        let mut p =
            BasicProperties::default().with_delivery_mode(if self.persistent { 2 } else { 1 });
        let ct = self.content_type.clone().or_else(|| match &msg.body {
            Body::Json(_) => Some("application/json".into()),
            Body::Bytes(_) => msg.headers.get("content-type").cloned(),
        });
        if let Some(ct) = ct {
            p = p.with_content_type(ct.as_str().into());
        }
        let get = |k: &str| msg.headers.get(k).map(|v| ShortString::from(v.as_str()));
        p = p.with_message_id(get("amqp.message-id").unwrap_or_else(|| msg.id.as_str().into()));
        if let Some(v) = get("amqp.correlation-id") {
            p = p.with_correlation_id(v);
        }
        if let Some(v) = get("amqp.reply-to") {
            p = p.with_reply_to(v);
        }
        if let Some(v) = get("amqp.type") {
            p = p.with_type(v);
        }
        if let Some(v) = get("amqp.app-id") {
            p = p.with_app_id(v);
        }
        if self.forward_headers {
            let mut table = FieldTable::default();
            for (k, v) in &msg.headers {
                if k.starts_with("amqp.") || k == "content-type" {
                    continue;
                }
                table.insert(k.as_str().into(), AMQPValue::LongString(v.as_str().into()));
            }
            p = p.with_headers(table);
        }
        p
    }
}

#[async_trait]
impl Sink for AmqpSink {
    async fn start(&self, resources: &Arc<Resources>) -> Result<(), String> {
        let conn = self
            .conn
            .get_or_init(|| resources.amqp.get(&self.settings))
            .clone();
        // Connect and declare now, so wrong credentials or a bad declaration
        // stop the route from starting instead of failing every message.
        let ch = conn.channel().await?;
        declare(&ch, &self.settings.topology).await?;
        if !self.exchange.is_empty() {
            let passive = ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            };
            ch.exchange_declare(self.exchange.as_str().into(), ExchangeKind::Direct, passive, FieldTable::default())
                .await
                .map_err(|e| format!("exchange `{}` does not exist ({e}); create it or declare it under `declare.exchanges`", self.exchange))?;
        }
        let _ = ch.close(200, "checked".into()).await;
        Ok(())
    }

    async fn deliver(&self, msg: &Message) -> Result<(), DeliveryError> {
        let ch = self.channel().await?;
        let key = self.routing_key.render(msg);
        let opts = BasicPublishOptions {
            mandatory: self.mandatory,
            immediate: false,
        };
        let body = msg.body.to_bytes();
        let publish = async {
            let confirm = ch
                .basic_publish(
                    self.exchange.as_str().into(),
                    key.as_str().into(),
                    opts,
                    &body,
                    self.properties(msg),
                )
                .await?;
            confirm.await
        };
        let confirmation = match tokio::time::timeout(self.timeout, publish).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(DeliveryError::retryable(format!(
                    "amqp publish to `{}`: {e}",
                    self.exchange
                )));
            }
            Err(_) => {
                return Err(DeliveryError::retryable(format!(
                    "amqp publish: no confirm within {:?}",
                    self.timeout
                )));
            }
        };
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                Err(DeliveryError::permanent(format!(
                    "amqp: message unroutable: exchange `{}` has no queue bound for routing key `{key}` ({} {})",
                    self.exchange, returned.reply_code, returned.reply_text
                )))
            }
            Confirmation::Nack(None) => Err(DeliveryError::retryable(
                "amqp: the broker refused the message (nack)",
            )),
            Confirmation::NotRequested => Err(DeliveryError::retryable(
                "amqp: channel not in confirm mode",
            )),
        }
    }

    fn describe(&self) -> String {
        format!(
            "amqp exchange `{}` on {}",
            self.exchange,
            redact_url(&self.settings.url)
        )
    }
}
