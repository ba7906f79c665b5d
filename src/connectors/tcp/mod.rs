//! `tcp`: a framed TCP server source, a client sink, and the client that the
//! `tcp_call` step shares with the sink.
//!
//! **Source.** Listens on `listen` (optionally TLS) and cuts the byte stream
//! into frames with the configured [`Framing`]; each frame is one message. In
//! `reply: none` mode nothing is written back. In `reply: result` mode the
//! route's result (the body after the last step) or the route's `error_reply`
//! goes back on the same connection; in `reply: hl7_ack` mode (the default for
//! `mllp`) an HL7 ACK does: AA after delivery, AE with the error when the route
//! failed, AR when the header is unusable. Replies keep the order of the
//! frames, also when a client pipelines many frames. The listener is shared
//! by route versions and never rebound during a hot reload (see
//! [`server::TcpServers`]).
//!
//! **Sink and `tcp_call`.** A pool of connections per endpoint; a broken
//! connection is dropped and a new one made on the next message. The sink can
//! wait for a reply (any frame, or an HL7 ACK that must be AA/CA); `tcp_call`
//! always waits and makes the reply the message body. With `connector: NAME`
//! the connection settings come from `connectors/NAME.yaml` (`kind: tcp`,
//! [`TcpConnectorConfig`]), options in the route override them, and all
//! routes using that connector share one pool (see `client.rs`).
//!
//! Invariants: a frame is acknowledged (AA, or the route's result) only after
//! the engine said it was handled; an oversized or malformed frame closes
//! only its own connection, never the listener.

mod client;
pub mod server;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

pub use client::{CallError, TcpClient, TcpConnections};

use super::{DeliveryError, Sink, Source, SourceContext, SourceError};
use crate::codec::framing::Framing;
use crate::codec::hl7;
use crate::config::{BuildContext, ByteSize, ConfigError, HumanDuration};
use crate::connectors::{ConnectorConfig, Resources};
use crate::message::Message;

const DEFAULT_MAX_FRAME: u64 = 1024 * 1024;

fn default_framing() -> Framing {
    Framing::Lines
}

/// What a `tcp` source writes back for each frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplyMode {
    /// One-way: nothing is written back.
    None,
    /// The route's result (the body after the last step), or `error_reply`
    /// when the message was not delivered.
    Result,
    /// An HL7 v2 acknowledgement built from the message's MSH.
    Hl7Ack,
}

/// Options of a `tcp` source.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TcpSourceConfig {
    /// Address to listen on, e.g. `0.0.0.0:2575`.
    pub listen: SocketAddr,
    /// How frames are cut from the stream (default `lines`).
    #[serde(default = "default_framing")]
    pub framing: Framing,
    /// Largest frame accepted (default 1MiB). A larger frame is logged and its
    /// connection closed.
    pub max_frame: Option<ByteSize>,
    /// Close a connection that sends no complete frame for this long while no
    /// reply is pending (default 5m).
    pub idle_timeout: Option<HumanDuration>,
    /// Most connections open at once (default 256); more are closed at once.
    pub max_connections: Option<usize>,
    /// `none` (one-way), `result` or `hl7_ack` (default `hl7_ack` for `mllp`,
    /// `none` otherwise).
    pub reply: Option<ReplyMode>,
    /// `reply: result`: what to send when a message failed; `{error}`,
    /// `{stage}`, `{kind}` and `{id}` are replaced (default `ERROR {error}`).
    pub error_reply: Option<String>,
    /// Frames read ahead of their replies on one connection (default 32).
    pub max_in_flight: Option<usize>,
    /// Serve TLS with this certificate and key.
    pub tls: Option<tls::ServerTlsConfig>,
}

impl TcpSourceConfig {
    pub fn build(&self, loc: &Location, ctx: &BuildContext) -> Result<TcpSource, ConfigError> {
        self.framing
            .validate()
            .map_err(|e| ctx.error(loc, format!("tcp.framing: {e}")))?;
        let max_frame = size(self.max_frame);
        if let Framing::Fixed(n) = self.framing
            && n > max_frame
        {
            return Err(ctx.error(
                loc,
                format!("tcp: fixed size {n} is over max_frame {max_frame}"),
            ));
        }
        let reply = self.reply.unwrap_or(if self.framing == Framing::Mllp {
            ReplyMode::Hl7Ack
        } else {
            ReplyMode::None
        });
        if self.error_reply.is_some() && reply != ReplyMode::Result {
            return Err(ctx.error(loc, "tcp.error_reply only applies with `reply: result`"));
        }
        let tls = match &self.tls {
            Some(t) => Some(
                t.acceptor()
                    .map_err(|e| ctx.error(loc, format!("tcp.tls: {e}")))?,
            ),
            None => None,
        };
        let positive = |v: Option<usize>, name: &str, default: usize| match v {
            Some(0) => Err(ctx.error(loc, format!("tcp.{name} must be at least 1"))),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        Ok(TcpSource {
            settings: Arc::new(server::Settings {
                listen: self.listen,
                framing: self.framing.clone(),
                max_frame,
                idle_timeout: self
                    .idle_timeout
                    .map(|d| d.0)
                    .unwrap_or(Duration::from_secs(300)),
                max_connections: positive(self.max_connections, "max_connections", 256)?,
                reply,
                error_reply: self
                    .error_reply
                    .clone()
                    .unwrap_or_else(|| "ERROR {error}".into()),
                max_in_flight: positive(self.max_in_flight, "max_in_flight", 32)?,
                tls,
            }),
        })
    }
}

fn size(s: Option<ByteSize>) -> usize {
    usize::try_from(s.map(|b| b.0).unwrap_or(DEFAULT_MAX_FRAME)).unwrap_or(usize::MAX)
}

pub struct TcpSource {
    settings: Arc<server::Settings>,
}

#[async_trait]
impl Source for TcpSource {
    async fn run(&self, ctx: SourceContext) -> Result<(), SourceError> {
        server::run(self.settings.clone(), ctx).await
    }

    fn claims(&self) -> Vec<String> {
        // Port 0 binds a fresh ephemeral port for each route: no clash.
        if self.settings.listen.port() == 0 {
            return Vec::new();
        }
        vec![format!("tcp {}", self.settings.listen)]
    }

    fn describe(&self) -> String {
        format!(
            "tcp {} on {}{}",
            self.settings.framing.name(),
            self.settings.listen,
            if self.settings.tls.is_some() {
                " (tls)"
            } else {
                ""
            }
        )
    }
}

// ---------------------------------------------------------------- client side

/// What a `tcp` sink or `tcp_call` step expects back for each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExpectReply {
    /// Nothing: a message is delivered once written (sink only).
    None,
    /// One frame, whatever it holds.
    Any,
    /// An HL7 ACK whose MSA-1 is AA or CA; AE/AR/CE/CR are failures.
    Hl7Ack,
}

/// Shared client settings in `connectors/NAME.yaml` (`kind: tcp`) for `tcp`
/// sinks and `tcp_call` steps. Every route that uses the connector shares one
/// pool of connections; options set in a route override these.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TcpConnectorConfig {
    /// Where to connect, `host:port`.
    pub connect: Option<String>,
    /// How messages (and replies) are framed (default `lines`).
    pub framing: Option<Framing>,
    /// Time allowed to connect, send and get the reply (default 30s). A
    /// timeout is a retryable failure.
    pub timeout: Option<HumanDuration>,
    /// Connections kept open to the endpoint, shared by all routes using this
    /// connector (default 4).
    pub pool: Option<usize>,
    /// Largest reply accepted (default 1MiB).
    pub max_frame: Option<ByteSize>,
    /// Connect with TLS.
    pub tls: Option<tls::ClientTlsConfig>,
}

/// Options of a `tcp` sink and of the `tcp_call` step.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TcpClientConfig {
    /// Where to connect, `host:port` (may come from the connector).
    pub connect: Option<String>,
    /// How messages (and replies) are framed (default `lines`).
    pub framing: Option<Framing>,
    /// What comes back: `none`, `any` or `hl7_ack` (sink default: `hl7_ack`
    /// for `mllp`, `none` otherwise; `tcp_call` default: `any`, or `hl7_ack`
    /// for `mllp`).
    pub reply: Option<ExpectReply>,
    /// Time allowed to connect, send and get the reply (default 30s). A
    /// timeout is a retryable failure.
    pub timeout: Option<HumanDuration>,
    /// Connections kept open to the endpoint (default 4).
    pub pool: Option<usize>,
    /// Largest reply accepted (default 1MiB).
    pub max_frame: Option<ByteSize>,
    /// Connect with TLS.
    pub tls: Option<tls::ClientTlsConfig>,
    /// Shared settings from `connectors/NAME.yaml` (`kind: tcp`); routes
    /// using it share its connections, options given here override its own.
    #[schemars(with = "Option<String>")]
    pub connector: Option<Spanned<String>>,
}

impl TcpClientConfig {
    /// Build the client; `step` selects the defaults of `tcp_call`.
    pub fn client(
        &self,
        loc: &Location,
        ctx: &BuildContext,
        step: bool,
    ) -> Result<(TcpClient, ExpectReply), ConfigError> {
        let kind = if step { "tcp_call" } else { "tcp" };
        let (conn, shared_as) = match &self.connector {
            None => (None, None),
            Some(n) => match ctx.connector(n, "tcp")? {
                ConnectorConfig::Tcp(c) => {
                    // The fingerprint keeps routes built against an older
                    // version of the file off the new version's pool.
                    let hash = ctx.connectors.by_name.get(&n.value).map(|c| c.hash);
                    (
                        Some(c),
                        Some(format!("{}#{:016x}", n.value, hash.unwrap_or(0))),
                    )
                }
                // `ctx.connector` already checked the kind.
                #[allow(unreachable_patterns)]
                _ => (None, None),
            },
        };
        let framing = self
            .framing
            .clone()
            .or_else(|| conn.and_then(|c| c.framing.clone()))
            .unwrap_or_else(default_framing);
        framing
            .validate()
            .map_err(|e| ctx.error(loc, format!("{kind}.framing: {e}")))?;
        let mllp = framing == Framing::Mllp;
        let reply = match (self.reply, step) {
            (Some(ExpectReply::None), true) => {
                return Err(ctx.error(loc, "tcp_call waits for a reply: use `reply: any` or `hl7_ack` (or a `tcp` sink for one-way sends)"));
            }
            (Some(r), _) => r,
            (None, _) if mllp => ExpectReply::Hl7Ack,
            (None, true) => ExpectReply::Any,
            (None, false) => ExpectReply::None,
        };
        let connect = match (&self.connect, conn.and_then(|c| c.connect.as_ref())) {
            (Some(c), _) | (None, Some(c)) => c.clone(),
            (None, None) => {
                return Err(ctx.error(
                    loc,
                    match &self.connector {
                        Some(n) => format!(
                            "{kind} needs `connect: host:port` (connector `{}` does not set it)",
                            n.value
                        ),
                        None => format!(
                            "{kind} needs `connect: host:port` (or a `connector` that sets it)"
                        ),
                    },
                ));
            }
        };
        let (host, _port) = connect
            .rsplit_once(':')
            .filter(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            .ok_or_else(|| {
                ctx.error(loc, format!("{kind}.connect `{connect}` must be host:port"))
            })?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let tls_config = self.tls.as_ref().or(conn.and_then(|c| c.tls.as_ref()));
        let tls = match tls_config {
            Some(t) => Some(
                t.connector(host)
                    .map_err(|e| ctx.error(loc, format!("{kind}.tls: {e}")))?,
            ),
            None => None,
        };
        let pool = match self.pool.or(conn.and_then(|c| c.pool)) {
            Some(0) => return Err(ctx.error(loc, format!("{kind}.pool must be at least 1"))),
            Some(n) => n,
            None => 4,
        };
        let max_frame = size(self.max_frame.or(conn.and_then(|c| c.max_frame)));
        let timeout = self
            .timeout
            .or(conn.and_then(|c| c.timeout))
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(30));
        // Routes share a connector's pool only when their connections are
        // interchangeable: a route that overrides where or how to connect gets
        // a pool of its own (still per connector, so it is shared too).
        let shared = shared_as
            .map(|name| format!("{name}|{connect}|{framing:?}|{max_frame}|{pool}|{tls_config:?}"));
        let endpoint = client::Endpoint {
            addr: connect,
            framing,
            max_frame,
            pool,
            tls,
        };
        Ok((TcpClient::new(endpoint, timeout, shared), reply))
    }

    pub fn build(&self, loc: &Location, ctx: &BuildContext) -> Result<TcpSink, ConfigError> {
        let (client, reply) = self.client(loc, ctx, false)?;
        Ok(TcpSink { client, reply })
    }
}

/// Check a reply against what was expected; the error says why it is not
/// an acceptance.
pub fn check_reply(expect: ExpectReply, reply: &[u8]) -> Result<(), String> {
    if expect != ExpectReply::Hl7Ack {
        return Ok(());
    }
    let text = String::from_utf8_lossy(reply);
    match hl7::ack_code(&text).as_deref() {
        Some("AA") | Some("CA") => Ok(()),
        Some(code) => {
            let why = hl7::ack_text(&text).unwrap_or_default();
            Err(format!("negative acknowledgement {code}: {why}"))
        }
        None => Err("reply is not an HL7 ACK (no MSA segment)".into()),
    }
}

pub struct TcpSink {
    client: TcpClient,
    reply: ExpectReply,
}

#[async_trait]
impl Sink for TcpSink {
    async fn start(&self, resources: &Arc<Resources>) -> Result<(), String> {
        self.client.start(resources);
        Ok(())
    }

    async fn deliver(&self, msg: &Message) -> Result<(), DeliveryError> {
        let wait = self.reply != ExpectReply::None;
        let reply = self
            .client
            .call(msg.body.to_bytes(), wait)
            .await
            .map_err(|e| DeliveryError {
                retryable: e.retryable(),
                message: format!("{}: {e}", self.describe()),
            })?;
        check_reply(self.reply, reply.as_deref().unwrap_or_default())
            .map_err(|e| DeliveryError::retryable(format!("{}: {e}", self.describe())))
    }

    fn describe(&self) -> String {
        self.client.describe()
    }
}
