//! `mqtt`: MQTT 3.1.1 source and sink, over rumqttc.
//!
//! **Invariant (QoS 1):** PUBACK is sent (rumqttc manual acks) only after the
//! route's outcome says handled. MQTT 3.1.1 has no negative ack: a broker
//! resends an unacknowledged message only when the client reconnects to its
//! persistent session. So after a failed outcome the source waits
//! `retry_delay`, then reconnects with the same client id and
//! `clean_session: false`, and the broker delivers the message again (with
//! the other unacknowledged ones: duplicates, never a loss). QoS 0 messages
//! are fire and forget: a failure loses that message alone (the source does
//! not reconnect for it, which would lose those sent meanwhile). QoS 2 is not offered: with
//! manual acks rumqttc would send PUBREC only, which does not make exactly-once
//! hold end to end.
//!
//! **Connections.** A source owns its MQTT session (the session *is* the
//! client id and its subscriptions, so two routes cannot share one); its
//! client id defaults to `ferry-<host>-<route>` so a restarted Ferry resumes
//! the same session. Sinks share one publishing connection per broker URL and
//! credentials. Broken connections are re-established with backoff.
//!
//! **Sink.** A QoS 1 publish is confirmed by its PUBACK. rumqttc reports
//! outgoing publishes in the order they were queued, which is how a PUBACK's
//! packet id is matched to the message that waits for it; after a connection
//! error every waiting message fails (the route retries) and a fresh session
//! starts, so an old session's retransmissions never confirm a new message.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS, Transport};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};
use tokio::sync::{mpsc, oneshot};

use super::broker::{
    Backoff, BrokerConnector, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_BACKOFF, InFlight, Pool,
    TlsOptions, failure_text, host_name, or_default, redact_url, resolve_endpoint, sleep_or_stop,
};
use super::{DeliveryError, Resources, Sink, Source, SourceContext, SourceError};
use crate::config::{BuildContext, ConfigError, HumanDuration};
use crate::connectors::ConnectorConfig;
use crate::message::{Body, Message};
use crate::template::Template;

/// Shared MQTT settings in `connectors/NAME.yaml` (`kind: mqtt`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttConnectorConfig {
    /// `mqtt://HOST:1883` or `mqtts://HOST:8883`.
    pub url: String,
    /// Client id prefix (default `ferry-<host name>`); sources append `-<route>`.
    pub client_id: Option<String>,
    /// User name.
    pub username: Option<String>,
    /// Password (use `${ENV}`).
    pub password: Option<String>,
    /// Keep-alive interval (default 30s).
    pub keep_alive: Option<HumanDuration>,
    /// How long connecting may take before it fails (default 5s).
    pub connect_timeout: Option<HumanDuration>,
    /// Longest wait between reconnect attempts (default 30s).
    pub max_backoff: Option<HumanDuration>,
    /// TLS settings (for `mqtts://`).
    #[serde(default)]
    pub tls: TlsOptions,
}

impl BrokerConnector for MqttConnectorConfig {
    const KIND: &'static str = "mqtt";
    fn from_config(c: &ConnectorConfig) -> Option<&Self> {
        match c {
            ConnectorConfig::Mqtt(c) => Some(c),
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
    host: String,
    port: u16,
    use_tls: bool,
    client_id: String,
    username: Option<String>,
    password: Option<String>,
    keep_alive: Duration,
    connect_timeout: Duration,
    max_backoff: Duration,
    tls: TlsOptions,
}

impl Settings {
    fn resolve(
        url: &Option<String>,
        connector: &Option<Spanned<String>>,
        loc: &Location,
        ctx: &BuildContext,
    ) -> Result<Settings, ConfigError> {
        let (conn, url) = resolve_endpoint::<MqttConnectorConfig>(url, connector, loc, ctx)?;
        let (scheme, rest) = url.split_once("://").unwrap_or(("mqtt", url.as_str()));
        let use_tls = match scheme {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" => true,
            other => {
                return Err(ctx.error(
                    loc,
                    format!("mqtt url scheme `{other}` (use mqtt:// or mqtts://)"),
                ));
            }
        };
        let hostport = rest
            .rsplit('@')
            .next()
            .unwrap_or(rest)
            .trim_end_matches('/');
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => match p.parse::<u16>() {
                Ok(p) => (h.to_string(), p),
                Err(_) => {
                    return Err(
                        ctx.error(loc, format!("mqtt url `{}`: bad port", redact_url(&url)))
                    );
                }
            },
            None => (hostport.to_string(), if use_tls { 8883 } else { 1883 }),
        };
        if host.is_empty() {
            return Err(ctx.error(loc, "mqtt url has no host"));
        }
        let tls = conn.map(|c| c.tls.clone()).unwrap_or_default();
        Ok(Settings {
            use_tls: use_tls || tls.is_set(),
            url,
            host,
            port,
            client_id: conn
                .and_then(|c| c.client_id.clone())
                .unwrap_or_else(|| format!("ferry-{}", host_name())),
            username: conn.and_then(|c| c.username.clone()),
            password: conn.and_then(|c| c.password.clone()),
            keep_alive: or_default(conn.and_then(|c| c.keep_alive), Duration::from_secs(30)),
            connect_timeout: or_default(
                conn.and_then(|c| c.connect_timeout),
                DEFAULT_CONNECT_TIMEOUT,
            ),
            max_backoff: or_default(conn.and_then(|c| c.max_backoff), DEFAULT_MAX_BACKOFF),
            tls,
        })
    }

    fn shown(&self) -> String {
        redact_url(&self.url)
    }

    fn options(&self, client_id: &str, clean_session: bool) -> Result<MqttOptions, String> {
        let mut o = MqttOptions::new(client_id, self.host.clone(), self.port);
        o.set_keep_alive(self.keep_alive);
        o.set_clean_session(clean_session);
        o.set_manual_acks(true);
        if let Some(u) = &self.username {
            o.set_credentials(u.clone(), self.password.clone().unwrap_or_default());
        }
        if self.use_tls {
            let cfg = self.tls.rustls_config().map_err(|e| e.to_string())?;
            o.set_transport(Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(Arc::new(cfg)),
            ));
        }
        Ok(o)
    }

    /// Connect: the client, and the events of its running event loop (the
    /// first one after the CONNACK). Errors say why the broker refused.
    async fn connect(
        &self,
        client_id: &str,
        clean_session: bool,
    ) -> Result<(AsyncClient, mpsc::Receiver<Result<Event, String>>, bool), String> {
        let (client, eventloop) = AsyncClient::new(self.options(client_id, clean_session)?, 256);
        let (tx, mut rx) = mpsc::channel(1024);
        tokio::spawn(drive(eventloop, tx));
        let first = tokio::time::timeout(self.connect_timeout, async {
            loop {
                match rx.recv().await {
                    Some(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                        return Ok(ack.session_present);
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e),
                    None => return Err("connection closed".to_string()),
                }
            }
        })
        .await;
        let where_ = self.shown();
        match first {
            Ok(Ok(session_present)) => Ok((client, rx, session_present)),
            Ok(Err(e)) => Err(format!("cannot connect to mqtt {where_}: {}", explain(&e))),
            Err(_) => Err(format!(
                "cannot connect to mqtt {where_}: no CONNACK within {:?}",
                self.connect_timeout
            )),
        }
    }
}

fn explain(e: &str) -> String {
    if e.contains("BadUserNamePassword") || e.contains("NotAuthorized") {
        format!("{e} (check username and password in the connector)")
    } else {
        super::broker::explain_certificate(e.to_string())
    }
}

/// Poll an event loop, forwarding events, until its first error (or until
/// nobody listens): the owner then starts a new session.
async fn drive(mut eventloop: EventLoop, tx: mpsc::Sender<Result<Event, String>>) {
    loop {
        match eventloop.poll().await {
            Ok(ev) => {
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e.to_string())).await;
                return;
            }
        }
    }
}

fn parse_qos(q: u8) -> Option<QoS> {
    match q {
        0 => Some(QoS::AtMostOnce),
        1 => Some(QoS::AtLeastOnce),
        _ => None,
    }
}

// ---------------------------------------------------------------- source

/// Options of an `mqtt` source.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttSourceConfig {
    /// Topic filters (`+` and `#` wildcards), e.g. `[sensors/+/temp, alarms/#]`.
    pub topics: Vec<String>,
    /// 1 (default: acknowledged after delivery) or 0 (at most once).
    pub qos: Option<u8>,
    /// Client id (default: the connector's prefix + `-<route id>`). Must be
    /// stable across restarts and unique per session.
    pub client_id: Option<String>,
    /// Start a fresh session on every connect (default false: the broker keeps
    /// subscriptions and queues messages while Ferry is away).
    #[serde(default)]
    pub clean_session: bool,
    /// Wait after a failed message before reconnecting to get it again (default 1s).
    pub retry_delay: Option<HumanDuration>,
    /// Broker URL (instead of, or overriding, the connector's).
    pub url: Option<String>,
    /// Connector file of kind `mqtt`.
    #[schemars(with = "Option<String>")]
    pub connector: Option<Spanned<String>>,
}

impl MqttSourceConfig {
    pub fn build(&self, loc: &Location, ctx: &BuildContext) -> Result<MqttSource, ConfigError> {
        let settings = Settings::resolve(&self.url, &self.connector, loc, ctx)?;
        if self.topics.is_empty() || self.topics.iter().any(String::is_empty) {
            return Err(ctx.error(loc, "mqtt.topics needs at least one non-empty topic filter"));
        }
        for t in &self.topics {
            let levels: Vec<&str> = t.split('/').collect();
            let bad_hash = levels
                .iter()
                .enumerate()
                .any(|(i, l)| l.contains('#') && (*l != "#" || i + 1 != levels.len()));
            let bad_plus = levels.iter().any(|l| l.contains('+') && *l != "+");
            if bad_hash || bad_plus {
                return Err(ctx.error(
                    loc,
                    format!(
                        "mqtt topic filter `{t}`: `+` must be a whole level, `#` only the last one"
                    ),
                ));
            }
        }
        let qos = parse_qos(self.qos.unwrap_or(1))
            .ok_or_else(|| ctx.error(loc, "mqtt.qos must be 0 or 1 (QoS 2 is not supported)"))?;
        Ok(MqttSource {
            client_id: self
                .client_id
                .clone()
                .unwrap_or_else(|| format!("{}-{}", settings.client_id, ctx.route_id)),
            settings,
            topics: self.topics.clone(),
            qos,
            clean_session: self.clean_session,
            retry_delay: or_default(self.retry_delay, Duration::from_secs(1)),
        })
    }
}

pub struct MqttSource {
    settings: Settings,
    client_id: String,
    topics: Vec<String>,
    qos: QoS,
    clean_session: bool,
    retry_delay: Duration,
}

impl MqttSource {
    /// One session; Ok(true) to stop, Ok(false) to reconnect (a message failed).
    async fn session(
        &self,
        ctx: &mut SourceContext,
        in_flight: &InFlight,
        started: &mut bool,
    ) -> Result<bool, String> {
        let (client, mut events, session_present) = self
            .settings
            .connect(&self.client_id, self.clean_session)
            .await?;
        let subscribing = !session_present || self.clean_session;
        if subscribing {
            let filters: Vec<rumqttc::SubscribeFilter> = self
                .topics
                .iter()
                .map(|t| rumqttc::SubscribeFilter::new(t.clone(), self.qos))
                .collect();
            client
                .subscribe_many(filters)
                .await
                .map_err(|e| format!("subscribe: {e}"))?;
        } else if !*started {
            *started = true;
            ctx.ready();
        }
        let (failed_tx, mut failed_rx) = mpsc::channel::<()>(1);
        loop {
            let ev = tokio::select! {
                _ = ctx.shutdown.cancelled() => {
                    in_flight.wait().await;
                    let _ = client.disconnect().await;
                    return Ok(true);
                }
                _ = failed_rx.recv() => {
                    // Reconnecting to the persistent session makes the broker
                    // send what is not acknowledged again.
                    tracing::debug!(route = %ctx.route_id, "mqtt: a message failed; reconnecting to get it again");
                    sleep_or_stop(&ctx.shutdown, self.retry_delay).await;
                    return Ok(false);
                }
                ev = events.recv() => ev,
            };
            let p = match ev {
                Some(Ok(Event::Incoming(Packet::Publish(p)))) => p,
                Some(Ok(Event::Incoming(Packet::SubAck(ack)))) => {
                    if ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                    {
                        return Err(format!(
                            "the broker refused a subscription to {:?}",
                            self.topics
                        ));
                    }
                    // Subscribed: from now on nothing published is missed.
                    if subscribing && !*started {
                        *started = true;
                        ctx.ready();
                    }
                    continue;
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e),
                None => return Err("connection closed".into()),
            };
            let mut msg = Message::new(
                ctx.route_id.clone(),
                format!("mqtt {}", p.topic),
                Body::Bytes(p.payload.clone()),
            );
            msg.headers.insert("mqtt.topic".into(), p.topic.clone());
            msg.headers
                .insert("mqtt.qos".into(), (p.qos as u8).to_string());
            msg.headers
                .insert("mqtt.retain".into(), p.retain.to_string());
            msg.headers.insert("mqtt.dup".into(), p.dup.to_string());
            let rx = tokio::select! {
                _ = ctx.shutdown.cancelled() => { in_flight.wait().await; return Ok(true); }
                r = ctx.input.submit(msg) => match r { Ok(rx) => rx, Err(_) => { in_flight.wait().await; return Ok(true); } },
            };
            let (client, failed, route) = (client.clone(), failed_tx.clone(), ctx.route_id.clone());
            in_flight.settle(rx, move |outcome| async move {
                if outcome.is_handled() {
                    if let Err(e) = client.ack(&p).await {
                        tracing::debug!(route = %route, error = %e, "mqtt: PUBACK not sent (session gone); the broker resends the message");
                    }
                } else if p.qos == QoS::AtMostOnce {
                    // The broker keeps no QoS 0 message for a session that is
                    // away: reconnecting would not bring this one back, and
                    // would lose those published meanwhile.
                    tracing::warn!(route = %route, error = %failure_text(&outcome), "mqtt QoS 0: message failed and cannot be redelivered");
                } else {
                    tracing::debug!(route = %route, error = %failure_text(&outcome), "mqtt: message failed; not acknowledged");
                    let _ = failed.try_send(());
                }
            });
        }
    }
}

#[async_trait]
impl Source for MqttSource {
    async fn run(&self, mut ctx: SourceContext) -> Result<(), SourceError> {
        let in_flight = InFlight::default();
        let mut backoff = Backoff::new(self.settings.max_backoff);
        let mut started = false;
        loop {
            match self.session(&mut ctx, &in_flight, &mut started).await {
                Ok(true) => break,
                Ok(false) => backoff.reset(),
                Err(e) if !started => return Err(SourceError(e)),
                Err(e) => {
                    let wait = backoff.next_wait();
                    tracing::warn!(route = %ctx.route_id, error = %e, retry_in = ?wait, "mqtt source: connection lost; reconnecting");
                    if !sleep_or_stop(&ctx.shutdown, wait).await {
                        break;
                    }
                }
            }
            if ctx.shutdown.is_cancelled() {
                break;
            }
        }
        in_flight.wait().await;
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "mqtt {} on {}",
            self.topics.join(","),
            self.settings.shown()
        )
    }
}

// ---------------------------------------------------------------- sink

/// Options of an `mqtt` sink.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttSinkConfig {
    /// Topic template, e.g. `plant/{header.line}/events` or `{header.mqtt.topic}`.
    pub topic: String,
    /// 1 (default: confirmed by PUBACK) or 0 (confirmed once written).
    pub qos: Option<u8>,
    /// Ask the broker to keep the message as the topic's last value.
    #[serde(default)]
    pub retain: bool,
    /// How long to wait for PUBACK (default 10s).
    pub timeout: Option<HumanDuration>,
    /// Broker URL (instead of, or overriding, the connector's).
    pub url: Option<String>,
    /// Connector file of kind `mqtt`.
    #[schemars(with = "Option<String>")]
    pub connector: Option<Spanned<String>>,
}

impl MqttSinkConfig {
    pub fn build(&self, loc: &Location, ctx: &BuildContext) -> Result<MqttSink, ConfigError> {
        let settings = Settings::resolve(&self.url, &self.connector, loc, ctx)?;
        let topic =
            Template::parse(&self.topic).map_err(|e| ctx.error(loc, format!("mqtt.topic: {e}")))?;
        let qos = parse_qos(self.qos.unwrap_or(1))
            .ok_or_else(|| ctx.error(loc, "mqtt.qos must be 0 or 1 (QoS 2 is not supported)"))?;
        Ok(MqttSink {
            settings,
            topic,
            qos,
            retain: self.retain,
            timeout: or_default(self.timeout, Duration::from_secs(10)),
            publisher: std::sync::OnceLock::new(),
        })
    }
}

/// The publishing connections shared by sinks.
#[derive(Default)]
pub struct MqttConnections {
    pool: Pool<Publisher>,
}

type Waiter = oneshot::Sender<Result<(), String>>;

/// One publishing session and the messages waiting for their confirmation.
struct PubSession {
    client: AsyncClient,
    /// Queued publishes not yet written, in queue order.
    queued: Arc<Mutex<VecDeque<(QoS, Waiter)>>>,
    alive: Arc<std::sync::atomic::AtomicBool>,
}

/// A shared publishing connection, replaced by a fresh session after an error.
pub struct Publisher {
    settings: Settings,
    session: tokio::sync::Mutex<Option<PubSession>>,
}

impl Publisher {
    async fn session(&self) -> Result<tokio::sync::MutexGuard<'_, Option<PubSession>>, String> {
        let mut g = self.session.lock().await;
        let alive = g
            .as_ref()
            .is_some_and(|s| s.alive.load(std::sync::atomic::Ordering::SeqCst));
        if !alive {
            let id = format!(
                "{}-pub-{}",
                self.settings.client_id,
                &uuid::Uuid::now_v7().simple().to_string()[20..]
            );
            let (client, events, _) = self.settings.connect(&id, true).await?;
            let queued: Arc<Mutex<VecDeque<(QoS, Waiter)>>> = Arc::default();
            let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
            tokio::spawn(confirmations(events, queued.clone(), alive.clone()));
            *g = Some(PubSession {
                client,
                queued,
                alive,
            });
        }
        Ok(g)
    }
}

/// Match outgoing publishes and PUBACKs to waiting messages; fail them all
/// when the connection ends.
async fn confirmations(
    mut events: mpsc::Receiver<Result<Event, String>>,
    queued: Arc<Mutex<VecDeque<(QoS, Waiter)>>>,
    alive: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut by_pkid: HashMap<u16, Waiter> = HashMap::new();
    let reason = loop {
        match events.recv().await {
            Some(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                let next = queued.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                if let Some((qos, w)) = next {
                    if qos == QoS::AtMostOnce {
                        let _ = w.send(Ok(()));
                    } else {
                        by_pkid.insert(pkid, w);
                    }
                }
            }
            Some(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                if let Some(w) = by_pkid.remove(&ack.pkid) {
                    let _ = w.send(Ok(()));
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => break e,
            None => break "connection closed".to_string(),
        }
    };
    alive.store(false, std::sync::atomic::Ordering::SeqCst);
    let drained: Vec<(QoS, Waiter)> = queued
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain(..)
        .collect();
    for w in drained
        .into_iter()
        .map(|(_, w)| w)
        .chain(by_pkid.into_values())
    {
        let _ = w.send(Err(format!("mqtt connection lost before PUBACK: {reason}")));
    }
}

pub struct MqttSink {
    settings: Settings,
    topic: Template,
    qos: QoS,
    retain: bool,
    timeout: Duration,
    publisher: std::sync::OnceLock<Arc<Publisher>>,
}

#[async_trait]
impl Sink for MqttSink {
    async fn start(&self, resources: &Arc<Resources>) -> Result<(), String> {
        let s = &self.settings;
        let key = format!("{}|{:?}|{:?}|{}", s.url, s.username, s.tls, s.client_id);
        let p = self
            .publisher
            .get_or_init(|| {
                resources.mqtt.pool.get_or_insert(&key, || Publisher {
                    settings: s.clone(),
                    session: tokio::sync::Mutex::new(None),
                })
            })
            .clone();
        p.session().await.map(|_| ())
    }

    async fn deliver(&self, msg: &Message) -> Result<(), DeliveryError> {
        let Some(p) = self.publisher.get() else {
            return Err(DeliveryError::retryable(
                "mqtt sink used before its route started",
            ));
        };
        let topic = self.topic.render(msg);
        if topic.is_empty() || topic.contains(['+', '#']) {
            return Err(DeliveryError::permanent(format!(
                "mqtt: cannot publish to topic `{topic}`"
            )));
        }
        let (tx, rx) = oneshot::channel();
        {
            // Queue order must equal the order rumqttc writes publishes in.
            let g = p.session().await.map_err(DeliveryError::retryable)?;
            let Some(s) = g.as_ref() else {
                return Err(DeliveryError::retryable("mqtt: no session"));
            };
            s.queued
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_back((self.qos, tx));
            if let Err(e) = s
                .client
                .publish(
                    topic.clone(),
                    self.qos,
                    self.retain,
                    msg.body.to_bytes().to_vec(),
                )
                .await
            {
                s.queued
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .pop_back();
                return Err(DeliveryError::retryable(format!(
                    "mqtt publish `{topic}`: {e}"
                )));
            }
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(DeliveryError::retryable(e)),
            Ok(Err(_)) => Err(DeliveryError::retryable(
                "mqtt: connection lost before PUBACK",
            )),
            Err(_) => Err(DeliveryError::retryable(format!(
                "mqtt publish `{topic}`: no PUBACK within {:?}",
                self.timeout
            ))),
        }
    }

    fn describe(&self) -> String {
        format!("mqtt on {}", self.settings.shown())
    }
}
