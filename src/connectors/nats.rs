//! `nats`: NATS core subjects and JetStream, over async-nats.
//!
//! **Invariant (JetStream):** a message is acked on the server only after the
//! route's outcome says handled; a failed outcome is `nak`ed with `nak_delay`,
//! so JetStream redelivers it later. While the route works on a message the
//! source sends "in progress" acks every half `ack_wait`, so JetStream never
//! redelivers a message that is merely slow (however long the route's retries
//! take); a message whose Ferry died is redelivered one `ack_wait` later.
//!
//! **Core subjects** have no acknowledgement at all: a message that fails in
//! the route is lost. Use JetStream when that matters; core subscriptions suit
//! telemetry and request fan-out. `queue_group` spreads a subject over several
//! Ferry instances.
//!
//! **Connections.** One client per server URL and credentials, shared by all
//! routes (async-nats multiplexes subscriptions and reconnects by itself, with
//! backoff, replaying subscriptions). A JetStream pull stream that breaks is
//! recreated with backoff.
//!
//! **Sink.** With `jetstream: true` (default) a message is confirmed when the
//! stream's publish ack arrives, and it carries `Nats-Msg-Id` = the Ferry
//! message id so the stream's duplicate window drops a re-sent copy. Core
//! publishes are confirmed once flushed to the server.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use async_trait::async_trait;
use futures_util::StreamExt;
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
use crate::message::{Body, Message, outcome_of};
use crate::template::Template;

/// Shared NATS settings in `connectors/NAME.yaml` (`kind: nats`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsConnectorConfig {
    /// Server URL(s), comma-separated: `nats://HOST:4222`, `tls://HOST:4222`.
    pub url: String,
    /// User name (with `password`).
    pub user: Option<String>,
    /// Password for `user` (use `${ENV}`).
    pub password: Option<String>,
    /// Authentication token.
    pub token: Option<String>,
    /// NKey seed (`SU…`).
    pub nkey: Option<String>,
    /// A `.creds` file (JWT + NKey).
    pub credentials_file: Option<PathBuf>,
    /// How long connecting may take before it fails (default 5s).
    pub connect_timeout: Option<HumanDuration>,
    /// Longest wait between attempts to recreate a broken JetStream consumer (default 30s).
    pub max_backoff: Option<HumanDuration>,
    /// TLS settings.
    #[serde(default)]
    pub tls: TlsOptions,
}

impl BrokerConnector for NatsConnectorConfig {
    const KIND: &'static str = "nats";
    fn from_config(c: &ConnectorConfig) -> Option<&Self> {
        match c {
            ConnectorConfig::Nats(c) => Some(c),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }
    fn url(&self) -> &str {
        &self.url
    }
}

/// Connection settings: the connector's, with the endpoint's `url` on top.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct Settings {
    url: String,
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
    nkey: Option<String>,
    credentials_file: Option<PathBuf>,
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
        let (conn, url) = resolve_endpoint::<NatsConnectorConfig>(url, connector, loc, ctx)?;
        if url.trim().is_empty() {
            return Err(ctx.error(loc, "nats url is empty"));
        }
        Ok(Settings {
            url,
            user: conn.and_then(|c| c.user.clone()),
            password: conn.and_then(|c| c.password.clone()),
            token: conn.and_then(|c| c.token.clone()),
            nkey: conn.and_then(|c| c.nkey.clone()),
            credentials_file: conn.and_then(|c| c.credentials_file.clone()),
            tls: conn.map(|c| c.tls.clone()).unwrap_or_default(),
            connect_timeout: or_default(
                conn.and_then(|c| c.connect_timeout),
                DEFAULT_CONNECT_TIMEOUT,
            ),
            max_backoff: or_default(conn.and_then(|c| c.max_backoff), DEFAULT_MAX_BACKOFF),
        })
    }

    fn key(&self) -> String {
        format!("{self:?}")
    }

    fn shown(&self) -> String {
        redact_url(&self.url)
    }
}

/// The NATS clients shared by all routes.
#[derive(Default)]
pub struct NatsConnections {
    pool: Pool<NatsConnection>,
}

impl NatsConnections {
    fn get(&self, s: &Settings) -> Arc<NatsConnection> {
        self.pool.get_or_insert(&s.key(), || NatsConnection {
            settings: s.clone(),
            client: tokio::sync::OnceCell::new(),
        })
    }
}

/// One NATS client; async-nats keeps it connected once it first connected.
pub struct NatsConnection {
    settings: Settings,
    client: tokio::sync::OnceCell<async_nats::Client>,
}

impl NatsConnection {
    async fn client(&self) -> Result<async_nats::Client, String> {
        self.client
            .get_or_try_init(|| self.connect())
            .await
            .cloned()
    }

    async fn connect(&self) -> Result<async_nats::Client, String> {
        let s = &self.settings;
        let mut opts = async_nats::ConnectOptions::new()
            .name(format!("ferry@{}", super::broker::host_name()))
            .connection_timeout(s.connect_timeout)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Disconnected => {
                        tracing::warn!("nats: disconnected; reconnecting")
                    }
                    async_nats::Event::Connected => tracing::info!("nats: connected"),
                    other => tracing::debug!(event = %other, "nats event"),
                }
            });
        if let (Some(u), Some(p)) = (&s.user, &s.password) {
            opts = opts.user_and_password(u.clone(), p.clone());
        }
        if let Some(t) = &s.token {
            opts = opts.token(t.clone());
        }
        if let Some(n) = &s.nkey {
            opts = opts.nkey(n.clone());
        }
        if let Some(f) = &s.credentials_file {
            opts = opts
                .credentials_file(f)
                .await
                .map_err(|e| format!("nats credentials_file {}: {e}", f.display()))?;
        }
        if s.tls.is_set() {
            opts = opts
                .require_tls(true)
                .tls_client_config(s.tls.rustls_config().map_err(|e| e.to_string())?);
        }
        let urls: Vec<async_nats::ServerAddr> = s
            .url
            .split(',')
            .map(|u| u.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("nats url `{}`: {e}", s.shown()))?;
        let client = with_timeout(
            s.connect_timeout + Duration::from_secs(1),
            &format!("cannot connect to nats {}", s.shown()),
            opts.connect(urls),
        )
        .await
        .map_err(|e| {
            if e.contains("authorization") {
                format!("{e} (check user/password, token or credentials in the connector)")
            } else {
                super::broker::explain_certificate(e)
            }
        })?;
        Ok(client)
    }
}

fn headers_to_nats(msg: &Message, extra_id: bool) -> async_nats::HeaderMap {
    let mut h = async_nats::HeaderMap::new();
    for (k, v) in &msg.headers {
        if k.starts_with("nats.") || k.contains(|c: char| c == ':' || c.is_whitespace()) {
            continue;
        }
        h.insert(k.as_str(), v.as_str());
    }
    if extra_id {
        h.insert("Nats-Msg-Id", msg.id.as_str());
    }
    h
}

fn message_from(
    ctx: &SourceContext,
    source: &str,
    subject: &str,
    payload: &[u8],
    headers: Option<&async_nats::HeaderMap>,
) -> Message {
    let mut msg = Message::new(
        ctx.route_id.clone(),
        source.to_string(),
        Body::Bytes(bytes::Bytes::copy_from_slice(payload)),
    );
    if let Some(h) = headers {
        for (name, values) in h.iter() {
            if let Some(v) = values.last() {
                msg.headers.insert(
                    name.to_string().to_ascii_lowercase(),
                    v.as_str().to_string(),
                );
            }
        }
    }
    msg.headers
        .insert("nats.subject".into(), subject.to_string());
    msg
}

// ---------------------------------------------------------------- source

/// JetStream consumption settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JetStreamSourceConfig {
    /// Stream to read (must exist).
    pub stream: String,
    /// Durable consumer name: created if missing, and shared by every Ferry
    /// instance that uses it (competing consumers).
    pub durable: String,
    /// How long JetStream waits for an ack before redelivering (default 30s).
    /// Ferry extends it with "in progress" acks while the route works, so it
    /// bounds only how soon a message held by a crashed Ferry comes back.
    pub ack_wait: Option<HumanDuration>,
    /// Delay before a failed (nak'ed) message is redelivered (default 1s).
    pub nak_delay: Option<HumanDuration>,
    /// Deliveries of one message before JetStream gives up (default: unlimited).
    pub max_deliver: Option<i64>,
    /// Unacknowledged messages held at once (default 256).
    pub max_ack_pending: Option<i64>,
    /// `all` (default: from the first message in the stream) or `new` (only
    /// messages that arrive after the consumer is created).
    #[serde(default)]
    pub deliver: DeliverFrom,
}

#[derive(Debug, Default, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliverFrom {
    #[default]
    All,
    New,
}

/// Options of a `nats` source.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsSourceConfig {
    /// Subject to subscribe to (wildcards `*` and `>`); with `jetstream`, the
    /// consumer's filter (default: the whole stream).
    pub subject: Option<String>,
    /// Core only: queue group, so several subscribers share the subject.
    pub queue_group: Option<String>,
    /// Read a JetStream stream through a durable pull consumer (acknowledged).
    pub jetstream: Option<JetStreamSourceConfig>,
    /// Server URL (instead of, or overriding, the connector's).
    pub url: Option<String>,
    /// Connector file of kind `nats`.
    #[schemars(with = "Option<String>")]
    pub connector: Option<Spanned<String>>,
}

impl NatsSourceConfig {
    pub fn build(&self, loc: &Location, ctx: &BuildContext) -> Result<NatsSource, ConfigError> {
        let settings = Settings::resolve(&self.url, &self.connector, loc, ctx)?;
        let mode = match &self.jetstream {
            Some(js) => {
                if self.queue_group.is_some() {
                    return Err(ctx.error(loc, "nats: `queue_group` is for core subjects; JetStream consumers are shared by their `durable` name"));
                }
                if js.stream.is_empty() || js.durable.is_empty() {
                    return Err(ctx.error(loc, "nats.jetstream needs `stream` and `durable`"));
                }
                if js
                    .durable
                    .contains(|c: char| c == '.' || c == '*' || c == '>' || c.is_whitespace())
                {
                    return Err(ctx.error(
                        loc,
                        "nats.jetstream.durable may not contain `.`, `*`, `>` or spaces",
                    ));
                }
                let ack_wait = or_default(js.ack_wait, Duration::from_secs(30));
                if ack_wait < Duration::from_secs(1) {
                    return Err(ctx.error(loc, "nats.jetstream.ack_wait must be at least 1s"));
                }
                Mode::JetStream {
                    stream: js.stream.clone(),
                    durable: js.durable.clone(),
                    filter: self.subject.clone().unwrap_or_default(),
                    ack_wait,
                    nak_delay: or_default(js.nak_delay, Duration::from_secs(1)),
                    max_deliver: js.max_deliver.unwrap_or(-1),
                    max_ack_pending: js.max_ack_pending.unwrap_or(256).max(1),
                    deliver: js.deliver,
                }
            }
            None => {
                let Some(subject) = self.subject.clone().filter(|s| !s.is_empty()) else {
                    return Err(ctx.error(loc, "nats source needs `subject` (or `jetstream`)"));
                };
                Mode::Core {
                    subject,
                    queue_group: self.queue_group.clone(),
                }
            }
        };
        Ok(NatsSource { settings, mode })
    }
}

enum Mode {
    Core {
        subject: String,
        queue_group: Option<String>,
    },
    JetStream {
        stream: String,
        durable: String,
        filter: String,
        ack_wait: Duration,
        nak_delay: Duration,
        max_deliver: i64,
        max_ack_pending: i64,
        deliver: DeliverFrom,
    },
}

pub struct NatsSource {
    settings: Settings,
    mode: Mode,
}

impl NatsSource {
    async fn run_core(
        &self,
        ctx: &mut SourceContext,
        client: async_nats::Client,
        subject: &str,
        group: &Option<String>,
    ) -> Result<(), SourceError> {
        let sub = match group {
            Some(g) => client.queue_subscribe(subject.to_string(), g.clone()).await,
            None => client.subscribe(subject.to_string()).await,
        };
        let mut sub =
            sub.map_err(|e| SourceError(format!("cannot subscribe to `{subject}`: {e}")))?;
        ctx.ready();
        let in_flight = InFlight::default();
        let source = self.describe();
        loop {
            let m = tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                m = sub.next() => m,
            };
            let Some(m) = m else { break };
            let msg = message_from(
                ctx,
                &source,
                m.subject.as_str(),
                &m.payload,
                m.headers.as_ref(),
            );
            let rx = tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                r = ctx.input.submit(msg) => match r { Ok(rx) => rx, Err(_) => break },
            };
            let route = ctx.route_id.clone();
            in_flight.settle(rx, move |outcome| async move {
                if !outcome.is_handled() {
                    tracing::warn!(route = %route, error = %failure_text(&outcome), "nats (core): message failed and cannot be redelivered (no acks on core subjects)");
                }
            });
        }
        let _ = sub.unsubscribe().await;
        in_flight.wait().await;
        Ok(())
    }

    /// Stream and consumer, created or checked; errors say what is missing.
    async fn consumer(
        &self,
        client: &async_nats::Client,
    ) -> Result<jetstream::consumer::Consumer<pull::Config>, String> {
        let Mode::JetStream {
            stream,
            durable,
            filter,
            ack_wait,
            max_deliver,
            max_ack_pending,
            deliver,
            ..
        } = &self.mode
        else {
            return Err("not a JetStream source".into());
        };
        let js = jetstream::new(client.clone());
        let st = js.get_stream(stream).await.map_err(|e| {
            format!(
                "JetStream stream `{stream}` not found on {} ({e}); create it (e.g. `nats stream add {stream}`)",
                self.settings.shown()
            )
        })?;
        let config = pull::Config {
            durable_name: Some(durable.clone()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: *ack_wait,
            max_deliver: *max_deliver,
            max_ack_pending: *max_ack_pending,
            filter_subject: filter.clone(),
            deliver_policy: match deliver {
                DeliverFrom::All => jetstream::consumer::DeliverPolicy::All,
                DeliverFrom::New => jetstream::consumer::DeliverPolicy::New,
            },
            ..Default::default()
        };
        st.get_or_create_consumer(durable, config)
            .await
            .map_err(|e| format!("JetStream consumer `{durable}` on `{stream}`: {e}"))
    }

    async fn run_jetstream(
        &self,
        ctx: &mut SourceContext,
        conn: &NatsConnection,
    ) -> Result<(), SourceError> {
        let Mode::JetStream {
            ack_wait,
            nak_delay,
            max_ack_pending,
            ..
        } = &self.mode
        else {
            return Ok(());
        };
        let (ack_wait, nak_delay) = (*ack_wait, *nak_delay);
        let in_flight = InFlight::default();
        let mut backoff = Backoff::new(self.settings.max_backoff);
        let mut started = false;
        let source = self.describe();
        'session: loop {
            let opened = async {
                let client = conn.client().await?;
                let consumer = self.consumer(&client).await?;
                consumer
                    .stream()
                    .max_messages_per_batch((*max_ack_pending).clamp(1, 512) as usize)
                    .heartbeat(Duration::from_secs(5))
                    .expires(Duration::from_secs(30))
                    .messages()
                    .await
                    .map_err(|e| format!("cannot pull from JetStream: {e}"))
            }
            .await;
            let mut messages = match opened {
                Ok(m) => m,
                Err(e) if !started => return Err(SourceError(e)),
                Err(e) => {
                    let wait = backoff.next_wait();
                    tracing::error!(route = %ctx.route_id, error = %e, retry_in = ?wait, "nats source: cannot pull; retrying");
                    if !sleep_or_stop(&ctx.shutdown, wait).await {
                        break;
                    }
                    continue;
                }
            };
            if !started {
                started = true;
                ctx.ready();
            }
            loop {
                let next = tokio::select! {
                    _ = ctx.shutdown.cancelled() => break 'session,
                    m = messages.next() => m,
                };
                let m = match next {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        tracing::warn!(route = %ctx.route_id, error = %e, "nats source: pull stream broke; recreating it");
                        let wait = backoff.next_wait();
                        if !sleep_or_stop(&ctx.shutdown, wait).await {
                            break 'session;
                        }
                        continue 'session;
                    }
                    None => continue 'session,
                };
                backoff.reset();
                let mut msg = message_from(
                    ctx,
                    &source,
                    m.subject.as_str(),
                    &m.payload,
                    m.headers.as_ref(),
                );
                if let Ok(info) = m.info() {
                    msg.headers
                        .insert("nats.stream".into(), info.stream.to_string());
                    msg.headers
                        .insert("nats.sequence".into(), info.stream_sequence.to_string());
                    msg.headers
                        .insert("nats.delivered".into(), info.delivered.to_string());
                }
                let rx = tokio::select! {
                    // Unacked: JetStream redelivers it after ack_wait.
                    _ = ctx.shutdown.cancelled() => break 'session,
                    r = ctx.input.submit(msg) => match r { Ok(rx) => rx, Err(_) => break 'session },
                };
                let route = ctx.route_id.clone();
                in_flight.spawn(async move {
                    let mut rx = std::pin::pin!(outcome_of(rx));
                    let mut tick = tokio::time::interval(ack_wait / 2);
                    tick.tick().await;
                    let outcome = loop {
                        tokio::select! {
                            o = &mut rx => break o,
                            _ = tick.tick() => {
                                let _ = m.ack_with(AckKind::Progress).await;
                            }
                        }
                    };
                    let result = if outcome.is_handled() {
                        m.ack().await
                    } else {
                        tracing::debug!(route = %route, error = %failure_text(&outcome), "nats: nak");
                        m.ack_with(AckKind::Nak(Some(nak_delay))).await
                    };
                    if let Err(e) = result {
                        tracing::debug!(route = %route, error = %e, "nats: could not settle; JetStream redelivers after ack_wait");
                    }
                });
            }
        }
        in_flight.wait().await;
        // Acks are buffered publishes: push them out before the route is gone.
        if let Ok(client) = conn.client().await {
            let _ = tokio::time::timeout(Duration::from_secs(5), client.flush()).await;
        }
        Ok(())
    }
}

#[async_trait]
impl Source for NatsSource {
    async fn run(&self, mut ctx: SourceContext) -> Result<(), SourceError> {
        let conn = ctx.resources.nats.get(&self.settings);
        match &self.mode {
            Mode::Core {
                subject,
                queue_group,
            } => {
                let client = conn.client().await.map_err(SourceError)?;
                self.run_core(&mut ctx, client, subject, queue_group).await
            }
            Mode::JetStream { .. } => self.run_jetstream(&mut ctx, &conn).await,
        }
    }

    fn describe(&self) -> String {
        match &self.mode {
            Mode::Core { subject, .. } => format!("nats {subject} on {}", self.settings.shown()),
            Mode::JetStream {
                stream, durable, ..
            } => format!(
                "nats jetstream {stream}/{durable} on {}",
                self.settings.shown()
            ),
        }
    }
}

// ---------------------------------------------------------------- sink

/// Options of a `nats` sink.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkConfig {
    /// Subject template, e.g. `orders.{header.region}` or `orders.{body.region}`.
    pub subject: String,
    /// Publish through JetStream and wait for the stream's ack (default true).
    /// A subject that no stream captures is then an error. `false`: core
    /// publish, confirmed once flushed to the server.
    #[serde(default = "yes")]
    pub jetstream: bool,
    /// Send the message's headers as NATS headers (default true).
    #[serde(default = "yes")]
    pub forward_headers: bool,
    /// How long to wait for the publish ack (default 10s).
    pub timeout: Option<HumanDuration>,
    /// Server URL (instead of, or overriding, the connector's).
    pub url: Option<String>,
    /// Connector file of kind `nats`.
    #[schemars(with = "Option<String>")]
    pub connector: Option<Spanned<String>>,
}

fn yes() -> bool {
    true
}

impl NatsSinkConfig {
    pub fn build(&self, loc: &Location, ctx: &BuildContext) -> Result<NatsSink, ConfigError> {
        let settings = Settings::resolve(&self.url, &self.connector, loc, ctx)?;
        let subject = Template::parse(&self.subject)
            .map_err(|e| ctx.error(loc, format!("nats.subject: {e}")))?;
        Ok(NatsSink {
            settings,
            subject,
            jetstream: self.jetstream,
            forward_headers: self.forward_headers,
            timeout: or_default(self.timeout, Duration::from_secs(10)),
            client: OnceLock::new(),
        })
    }
}

pub struct NatsSink {
    settings: Settings,
    subject: Template,
    jetstream: bool,
    forward_headers: bool,
    timeout: Duration,
    client: OnceLock<async_nats::Client>,
}

#[async_trait]
impl Sink for NatsSink {
    async fn start(&self, resources: &Arc<Resources>) -> Result<(), String> {
        let conn = resources.nats.get(&self.settings);
        let client = conn.client().await?;
        let _ = self.client.set(client);
        Ok(())
    }

    async fn deliver(&self, msg: &Message) -> Result<(), DeliveryError> {
        let Some(client) = self.client.get() else {
            return Err(DeliveryError::retryable(
                "nats sink used before its route started",
            ));
        };
        let subject = self.subject.render(msg);
        if subject.is_empty() || subject.contains(char::is_whitespace) {
            return Err(DeliveryError::permanent(format!(
                "nats: invalid subject `{subject}`"
            )));
        }
        let headers = if self.forward_headers {
            headers_to_nats(msg, self.jetstream)
        } else {
            let mut h = async_nats::HeaderMap::new();
            if self.jetstream {
                h.insert("Nats-Msg-Id", msg.id.as_str());
            }
            h
        };
        let body = msg.body.to_bytes();
        if self.jetstream {
            let js = jetstream::new(client.clone());
            let publish = async {
                js.publish_with_headers(subject.clone(), headers, body)
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| e.to_string())
            };
            match tokio::time::timeout(self.timeout, publish).await {
                Ok(Ok(_ack)) => Ok(()),
                Ok(Err(e)) if e.contains("no responders") || e.contains("no stream found") => {
                    Err(DeliveryError::retryable(format!(
                        "nats: no JetStream stream captures subject `{subject}` ({e})"
                    )))
                }
                Ok(Err(e)) => Err(DeliveryError::retryable(format!(
                    "nats publish `{subject}`: {e}"
                ))),
                Err(_) => Err(DeliveryError::retryable(format!(
                    "nats publish `{subject}`: no ack within {:?}",
                    self.timeout
                ))),
            }
        } else {
            let publish = async {
                client
                    .publish_with_headers(subject.clone(), headers, body)
                    .await
                    .map_err(|e| e.to_string())?;
                client.flush().await.map_err(|e| e.to_string())
            };
            match tokio::time::timeout(self.timeout, publish).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(DeliveryError::retryable(format!(
                    "nats publish `{subject}`: {e}"
                ))),
                Err(_) => Err(DeliveryError::retryable(format!(
                    "nats publish `{subject}`: not flushed within {:?}",
                    self.timeout
                ))),
            }
        }
    }

    fn describe(&self) -> String {
        format!("nats on {}", self.settings.shown())
    }
}

/// Headers as a map, for tests of the mapping.
#[cfg(test)]
fn header_names(h: &async_nats::HeaderMap) -> std::collections::BTreeMap<String, String> {
    h.iter()
        .filter_map(|(k, v)| v.last().map(|v| (k.to_string(), v.as_str().to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_go_out_without_nats_metadata() {
        let mut msg = Message::new(Arc::from("r"), "t", Body::Bytes("x".into()));
        msg.headers.insert("order-id".into(), "7".into());
        msg.headers.insert("nats.subject".into(), "a.b".into());
        let h = header_names(&headers_to_nats(&msg, true));
        assert_eq!(h.get("order-id").map(String::as_str), Some("7"));
        assert!(!h.contains_key("nats.subject"));
        assert_eq!(h.get("Nats-Msg-Id"), Some(&msg.id));
    }
}
