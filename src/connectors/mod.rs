//! Connectors: where messages come from ([`Source`]) and where they go ([`Sink`]).
//!
//! One file per kind. Each kind declares its route options (a serde struct with
//! doc comments, which become the JSON schema and the docs) and a `build` that
//! turns them into a running part. Registering a kind is one line in
//! [`SourceConfig`], [`SinkConfig`] or [`ConnectorConfig`].
//!
//! The contract with the engine: a source turns input into [`Message`]s, hands
//! them to [`RouteInput::submit`] (which waits when the route is busy:
//! backpressure), and acknowledges its input (HTTP reply, file move, …) only
//! according to the [`Outcome`] it gets back. A sink returns `Ok` only when the
//! other side has confirmed the message.

#[cfg(feature = "amqp")]
pub mod amqp;
pub mod broker;
pub mod file;
pub mod http;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod queue;
#[cfg(feature = "redis")]
pub mod redis;
pub mod stdio;
pub mod tcp;
pub mod timer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{BuildContext, ConfigError};
use crate::message::{Ack, AckReceiver, Envelope, Message, Outcome, outcome_of};
use crate::queue_store::{FsyncPolicy, QueueStore, StoreError};

/// Route `from:`: `{ KIND: { options } }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// Receive HTTP requests on a shared listener; reply after delivery.
    Http(http::HttpSourceConfig),
    /// Watch a folder; move each file to `.done/` after delivery.
    File(file::FileSourceConfig),
    /// Consume the embedded durable queue (no broker needed).
    Queue(queue::QueueSourceConfig),
    /// Emit a message at a fixed interval.
    Timer(timer::TimerSourceConfig),
    /// Read standard input, one message per line.
    Stdin(stdio::StdinSourceConfig),
    /// Accept framed TCP connections (lines, length-prefixed, STX/ETX, fixed,
    /// MLLP); optionally reply with the result or an HL7 ACK.
    Tcp(tcp::TcpSourceConfig),
    /// Consume a RabbitMQ queue; ack after delivery.
    #[cfg(feature = "amqp")]
    Amqp(amqp::AmqpSourceConfig),
    /// Subscribe to NATS subjects, or pull from a JetStream durable consumer.
    #[cfg(feature = "nats")]
    Nats(nats::NatsSourceConfig),
    /// Read a Redis stream (consumer group), list or pub/sub channel.
    #[cfg(feature = "redis")]
    Redis(redis::RedisSourceConfig),
    /// Poll PostgreSQL rows (woken by LISTEN/NOTIFY); mark them after delivery.
    #[cfg(feature = "postgres")]
    Postgres(postgres::PostgresSourceConfig),
    /// Subscribe to MQTT topics; PUBACK after delivery.
    #[cfg(feature = "mqtt")]
    Mqtt(mqtt::MqttSourceConfig),
}

/// One entry of a route's `to:` list (or `errors.dead_letter`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    /// Send the message as an HTTP request (2xx = delivered).
    Http(http::HttpSinkConfig),
    /// Write the message to a file atomically (or append as JSON lines).
    File(file::FileSinkConfig),
    /// Append the message to the embedded durable queue.
    Queue(queue::QueueSinkConfig),
    /// Print the message body on standard output.
    Stdout(stdio::StdoutSinkConfig),
    /// Send the body as one frame over a pooled TCP connection.
    Tcp(tcp::TcpClientConfig),
    /// Publish to a RabbitMQ exchange with publisher confirms.
    #[cfg(feature = "amqp")]
    Amqp(amqp::AmqpSinkConfig),
    /// Publish to a NATS subject (JetStream: wait for the stream's ack).
    #[cfg(feature = "nats")]
    Nats(nats::NatsSinkConfig),
    /// XADD to a Redis stream, push to a list or publish to a channel.
    #[cfg(feature = "redis")]
    Redis(redis::RedisSinkConfig),
    /// Insert or upsert a row per message into a PostgreSQL table.
    #[cfg(feature = "postgres")]
    Postgres(postgres::PostgresSinkConfig),
    /// Publish to an MQTT topic (QoS 1: wait for PUBACK).
    #[cfg(feature = "mqtt")]
    Mqtt(mqtt::MqttSinkConfig),
}

/// A connector file (`connectors/NAME.yaml`): shared settings that endpoints pull
/// in with `connector: NAME`. `kind` must match the endpoint's kind.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ConnectorConfig {
    /// HTTP client and server settings.
    Http(http::HttpConnectorConfig),
    /// A TCP endpoint for `tcp` sinks and `tcp_call` steps (one shared pool).
    Tcp(tcp::TcpConnectorConfig),
    /// A RabbitMQ broker.
    #[cfg(feature = "amqp")]
    Amqp(amqp::AmqpConnectorConfig),
    /// A NATS server (cluster).
    #[cfg(feature = "nats")]
    Nats(nats::NatsConnectorConfig),
    /// A Redis server.
    #[cfg(feature = "redis")]
    Redis(redis::RedisConnectorConfig),
    /// A PostgreSQL database.
    #[cfg(feature = "postgres")]
    Postgres(postgres::PostgresConnectorConfig),
    /// An MQTT broker.
    #[cfg(feature = "mqtt")]
    Mqtt(mqtt::MqttConnectorConfig),
}

impl ConnectorConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectorConfig::Http(_) => "http",
            ConnectorConfig::Tcp(_) => "tcp",
            #[cfg(feature = "amqp")]
            ConnectorConfig::Amqp(_) => "amqp",
            #[cfg(feature = "nats")]
            ConnectorConfig::Nats(_) => "nats",
            #[cfg(feature = "redis")]
            ConnectorConfig::Redis(_) => "redis",
            #[cfg(feature = "postgres")]
            ConnectorConfig::Postgres(_) => "postgres",
            #[cfg(feature = "mqtt")]
            ConnectorConfig::Mqtt(_) => "mqtt",
        }
    }
}

impl SourceConfig {
    pub fn build(
        cfg: &Spanned<SourceConfig>,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Source>, ConfigError> {
        let loc = &cfg.referenced;
        Ok(match &cfg.value {
            SourceConfig::Http(c) => Arc::new(c.build(loc, ctx)?),
            SourceConfig::File(c) => Arc::new(c.build(loc, ctx)?),
            SourceConfig::Queue(c) => Arc::new(c.build(loc, ctx)?),
            SourceConfig::Timer(c) => Arc::new(c.build(loc, ctx)?),
            SourceConfig::Stdin(c) => Arc::new(c.build(loc, ctx)?),
            SourceConfig::Tcp(c) => Arc::new(c.build(loc, ctx)?),
            #[cfg(feature = "amqp")]
            SourceConfig::Amqp(c) => Arc::new(c.build(loc, ctx)?),
            #[cfg(feature = "nats")]
            SourceConfig::Nats(c) => Arc::new(c.build(loc, ctx)?),
            #[cfg(feature = "redis")]
            SourceConfig::Redis(c) => Arc::new(c.build(loc, ctx)?),
            #[cfg(feature = "postgres")]
            SourceConfig::Postgres(c) => Arc::new(c.build(loc, ctx)?),
            #[cfg(feature = "mqtt")]
            SourceConfig::Mqtt(c) => Arc::new(c.build(loc, ctx)?),
        })
    }
}

impl SinkConfig {
    pub fn build(
        cfg: &Spanned<SinkConfig>,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Sink>, ConfigError> {
        let loc = &cfg.referenced;
        Ok(match &cfg.value {
            SinkConfig::Http(c) => Arc::new(c.build(loc, ctx)?),
            SinkConfig::File(c) => Arc::new(c.build(loc, ctx)?),
            SinkConfig::Queue(c) => Arc::new(c.build(loc, ctx)?),
            SinkConfig::Stdout(c) => Arc::new(c.build(loc, ctx)?),
            SinkConfig::Tcp(c) => Arc::new(c.build(loc, ctx)?),
            #[cfg(feature = "amqp")]
            SinkConfig::Amqp(c) => Arc::new(c.build(loc, ctx)?),
            #[cfg(feature = "nats")]
            SinkConfig::Nats(c) => Arc::new(c.build(loc, ctx)?),
            #[cfg(feature = "redis")]
            SinkConfig::Redis(c) => Arc::new(c.build(loc, ctx)?),
            #[cfg(feature = "postgres")]
            SinkConfig::Postgres(c) => Arc::new(c.build(loc, ctx)?),
            #[cfg(feature = "mqtt")]
            SinkConfig::Mqtt(c) => Arc::new(c.build(loc, ctx)?),
        })
    }
}

/// A running source of messages.
#[async_trait]
pub trait Source: Send + Sync + 'static {
    /// Take input and submit it until `ctx.shutdown` is cancelled, then return
    /// once the input in hand has been answered. Call `ctx.ready()` once the source
    /// takes input (listener registered, folder watched); an error before that
    /// means the route could not start.
    async fn run(&self, ctx: SourceContext) -> Result<(), SourceError>;

    /// Exclusive resources this source takes (e.g. `http 127.0.0.1:8080 POST /orders`).
    /// Two routes claiming the same resource is a configuration error.
    fn claims(&self) -> Vec<String> {
        Vec::new()
    }

    /// Short description for logs and status, e.g. `http POST /orders`.
    fn describe(&self) -> String;
}

/// A running destination of messages.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Called when a route using this sink starts, before its source takes
    /// input: take shared connections from `resources` and check that the
    /// other side is reachable and accepts the settings. An error stops the
    /// route from starting (a clear error now rather than a failure per message).
    async fn start(&self, _resources: &Arc<Resources>) -> Result<(), String> {
        Ok(())
    }

    /// Deliver one message; `Ok` only once the other side confirmed it.
    async fn deliver(&self, msg: &Message) -> Result<(), DeliveryError>;

    /// Short description for logs and error headers, e.g. `http POST http://…`.
    fn describe(&self) -> String;
}

/// A sink could not deliver.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    /// Whether trying again later could succeed (timeouts, 5xx, connection refused).
    pub retryable: bool,
    pub message: String,
}

impl DeliveryError {
    pub fn retryable(message: impl Into<String>) -> Self {
        DeliveryError {
            retryable: true,
            message: message.into(),
        }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        DeliveryError {
            retryable: false,
            message: message.into(),
        }
    }
}

/// A source stopped with an error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// An error with its chain of causes, `outer: inner: …`, each cause shown
/// once. Client libraries (reqwest, tokio-postgres) put the useful part (the
/// refused certificate, the role that does not exist) in a source.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// State shared by all routes' connectors: the HTTP and TCP listeners (shared
/// by route versions, never rebound during a reload), the files currently
/// being processed, the embedded queue store (opened on first use), one
/// connection per broker connector and one connection pool per `tcp`
/// connector, shared by every route using it.
pub struct Resources {
    pub http: http::HttpServers,
    pub tcp: tcp::server::TcpServers,
    pub tcp_clients: tcp::TcpConnections,
    pub files: file::FileClaims,
    pub file_appends: file::FileAppends,
    #[cfg(feature = "amqp")]
    pub amqp: amqp::AmqpConnections,
    #[cfg(feature = "nats")]
    pub nats: nats::NatsConnections,
    #[cfg(feature = "redis")]
    pub redis: redis::RedisConnections,
    #[cfg(feature = "postgres")]
    pub postgres: postgres::PostgresConnections,
    #[cfg(feature = "mqtt")]
    pub mqtt: mqtt::MqttConnections,
    data_dir: PathBuf,
    queue_fsync: FsyncPolicy,
    queues: tokio::sync::OnceCell<QueueStore>,
}

impl Resources {
    pub fn new(data_dir: PathBuf, queue_fsync: FsyncPolicy) -> Self {
        Resources {
            http: Default::default(),
            tcp: Default::default(),
            tcp_clients: Default::default(),
            files: Default::default(),
            file_appends: Default::default(),
            #[cfg(feature = "amqp")]
            amqp: Default::default(),
            #[cfg(feature = "nats")]
            nats: Default::default(),
            #[cfg(feature = "redis")]
            redis: Default::default(),
            #[cfg(feature = "postgres")]
            postgres: Default::default(),
            #[cfg(feature = "mqtt")]
            mqtt: Default::default(),
            data_dir,
            queue_fsync,
            queues: tokio::sync::OnceCell::new(),
        }
    }

    /// The embedded queue store (`DATA/queues.redb`), opened on first use.
    pub async fn queue_store(&self) -> Result<QueueStore, StoreError> {
        self.queues
            .get_or_try_init(|| async {
                let path = self.data_dir.join("queues.redb");
                let policy = self.queue_fsync;
                tokio::task::spawn_blocking(move || QueueStore::open(&path, policy))
                    .await
                    .map_err(|e| StoreError {
                        path: "queues.redb".into(),
                        message: e.to_string(),
                    })?
            })
            .await
            .cloned()
    }
}

/// What a running source gets from the engine.
pub struct SourceContext {
    pub route_id: Arc<str>,
    pub input: RouteInput,
    /// Cancelled when the route must stop taking input.
    pub shutdown: CancellationToken,
    pub resources: Arc<Resources>,
    ready: Option<oneshot::Sender<()>>,
}

impl SourceContext {
    pub fn new(
        route_id: Arc<str>,
        input: RouteInput,
        shutdown: CancellationToken,
        resources: Arc<Resources>,
    ) -> (SourceContext, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (
            SourceContext {
                route_id,
                input,
                shutdown,
                resources,
                ready: Some(tx),
            },
            rx,
        )
    }

    /// Tell the engine the source is taking input.
    pub fn ready(&mut self) {
        if let Some(tx) = self.ready.take() {
            let _ = tx.send(());
        }
    }
}

/// The door into a route: a bounded channel to its workers.
#[derive(Clone, Debug)]
pub struct RouteInput {
    tx: mpsc::Sender<Envelope>,
}

/// A message could not be handed to the route.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("route is stopping")]
    Closed,
    #[error("route is busy (no room after waiting {0:?})")]
    Busy(Duration),
}

impl RouteInput {
    pub fn new(tx: mpsc::Sender<Envelope>) -> Self {
        RouteInput { tx }
    }

    /// Hand a message to the route, waiting while it is full (backpressure).
    pub async fn submit(&self, message: Message) -> Result<AckReceiver, SubmitError> {
        let (ack, rx) = Ack::new();
        self.tx
            .send(Envelope { message, ack })
            .await
            .map_err(|_| SubmitError::Closed)?;
        Ok(rx)
    }

    /// Like [`submit`](Self::submit), but give up after `wait`.
    pub async fn submit_within(
        &self,
        message: Message,
        wait: Duration,
    ) -> Result<AckReceiver, SubmitError> {
        match tokio::time::timeout(wait, self.submit(message)).await {
            Ok(r) => r,
            Err(_) => Err(SubmitError::Busy(wait)),
        }
    }

    /// Submit and wait for the outcome.
    pub async fn process(&self, message: Message) -> Result<Outcome, SubmitError> {
        let rx = self.submit(message).await?;
        Ok(outcome_of(rx).await)
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}
