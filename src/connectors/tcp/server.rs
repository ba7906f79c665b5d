//! The `tcp` source's listeners and connections.
//!
//! Listeners are shared resources keyed by address, like HTTP listeners: the
//! route version that is registered on an address receives its new
//! connections, so a hot reload swaps the version without rebinding the port
//! (the old version finishes the connections it has, then closes them; the
//! peers reconnect to the new one). The socket is closed when no route is
//! registered on it any more.
//!
//! Each connection runs a reader and a writer. The reader cuts frames,
//! submits each as a message (waiting when the route is busy: backpressure
//! reaches the peer through TCP) and queues the answer it will get; the
//! writer answers in queue order, so pipelined frames get their replies in
//! order. At most `max_in_flight` frames wait for answers per connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ReplyMode;
use super::client::Io;
use crate::codec::framing::{FrameError, Framing};
use crate::codec::hl7::{self, AckCode};
use crate::connectors::{RouteInput, SourceContext, SourceError};
use crate::message::{AckReceiver, Body, FailureKind, Message, Outcome, outcome_of};

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A source's settings, fixed when its route is built.
pub struct Settings {
    pub listen: SocketAddr,
    pub framing: Framing,
    pub max_frame: usize,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub reply: ReplyMode,
    pub error_reply: String,
    pub max_in_flight: usize,
    pub tls: Option<TlsAcceptor>,
}

/// One route version on a listener.
struct Registration {
    id: u64,
    route: Arc<str>,
    settings: Arc<Settings>,
    input: RouteInput,
    shutdown: CancellationToken,
    connections: TaskTracker,
}

struct Listener {
    current: Mutex<Option<Arc<Registration>>>,
    open: AtomicUsize,
    local_addr: SocketAddr,
    stop: CancellationToken,
}

/// The TCP listeners of all `tcp` sources, by address.
#[derive(Default)]
pub struct TcpServers {
    listeners: tokio::sync::Mutex<HashMap<SocketAddr, Arc<Listener>>>,
    next_id: AtomicU64,
}

impl TcpServers {
    /// The address a route's listener is bound to (useful with port 0).
    pub async fn local_addr(&self, route: &str) -> Option<SocketAddr> {
        let map = self.listeners.lock().await;
        map.values()
            .find(|l| {
                l.current
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .is_some_and(|r| &*r.route == route)
            })
            .map(|l| l.local_addr)
    }

    /// Register a route version; returns the key of its listener. Port 0
    /// always binds a fresh ephemeral port.
    async fn register(&self, reg: Arc<Registration>) -> std::io::Result<SocketAddr> {
        let addr = reg.settings.listen;
        let mut map = self.listeners.lock().await;
        if addr.port() != 0
            && let Some(l) = map.get(&addr)
        {
            *l.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(reg);
            return Ok(addr);
        }
        let tcp = TcpListener::bind(addr).await?;
        let local_addr = tcp.local_addr()?;
        let listener = Arc::new(Listener {
            current: Mutex::new(Some(reg)),
            open: AtomicUsize::new(0),
            local_addr,
            stop: CancellationToken::new(),
        });
        tracing::info!(listen = %local_addr, "tcp listener started");
        tokio::spawn(accept_loop(tcp, listener.clone()));
        let key = if addr.port() == 0 { local_addr } else { addr };
        map.insert(key, listener);
        Ok(key)
    }

    /// Remove a route version; close the socket if nobody replaced it.
    async fn deregister(&self, addr: SocketAddr, id: u64) {
        let mut map = self.listeners.lock().await;
        let Some(l) = map.get(&addr) else { return };
        let mut current = l.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().is_some_and(|r| r.id == id) {
            *current = None;
            l.stop.cancel();
            drop(current);
            map.remove(&addr);
        }
    }
}

/// Run a `tcp` source until its route stops, then let its connections answer
/// what they took and close.
pub async fn run(settings: Arc<Settings>, mut ctx: SourceContext) -> Result<(), SourceError> {
    let servers = &ctx.resources.tcp;
    let reg = Arc::new(Registration {
        id: servers.next_id.fetch_add(1, Ordering::Relaxed),
        route: ctx.route_id.clone(),
        settings: settings.clone(),
        input: ctx.input.clone(),
        shutdown: ctx.shutdown.clone(),
        connections: TaskTracker::new(),
    });
    let key = servers
        .register(reg.clone())
        .await
        .map_err(|e| SourceError(format!("cannot listen on {}: {e}", settings.listen)))?;
    ctx.ready();
    ctx.shutdown.cancelled().await;
    ctx.resources.tcp.deregister(key, reg.id).await;
    reg.connections.close();
    reg.connections.wait().await;
    Ok(())
}

async fn accept_loop(tcp: TcpListener, listener: Arc<Listener>) {
    loop {
        let accepted = tokio::select! {
            _ = listener.stop.cancelled() => break,
            a = tcp.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and similar: wait, do not spin.
                tracing::warn!(listen = %listener.local_addr, error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let reg = listener
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(reg) = reg else { continue };
        if listener.open.load(Ordering::SeqCst) >= reg.settings.max_connections {
            tracing::warn!(route = %reg.route, %peer, max = reg.settings.max_connections, "tcp connection refused: too many connections");
            continue;
        }
        listener.open.fetch_add(1, Ordering::SeqCst);
        let l = listener.clone();
        let r = reg.clone();
        reg.connections.spawn(async move {
            connection(stream, peer, r).await;
            l.open.fetch_sub(1, Ordering::SeqCst);
        });
    }
    tracing::info!(listen = %listener.local_addr, "tcp listener stopped");
}

/// What the writer will send for one frame, in order.
enum Answer {
    /// Wait for the route's outcome, then reply according to the mode.
    Outcome {
        rx: AckReceiver,
        header: Option<Box<hl7::Header>>,
    },
    /// Reply at once (e.g. an HL7 reject of an unusable header), or not at all.
    Now(Option<Bytes>),
}

async fn connection(stream: TcpStream, peer: SocketAddr, reg: Arc<Registration>) {
    let _ = stream.set_nodelay(true);
    let s = &reg.settings;
    let io: Box<dyn Io> = match &s.tls {
        Some(acceptor) => {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => Box::new(tls),
                Ok(Err(e)) => {
                    tracing::warn!(route = %reg.route, %peer, error = %e, "tls handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::warn!(route = %reg.route, %peer, "tls handshake timed out");
                    return;
                }
            }
        }
        None => Box::new(stream),
    };
    tracing::debug!(route = %reg.route, %peer, "tcp connection opened");
    let (r, w) = tokio::io::split(io);
    let mut reader = FramedRead::new(r, s.framing.codec(s.max_frame));
    let mut writer = FramedWrite::new(w, s.framing.codec(s.max_frame));
    let (tx, mut rx) = mpsc::channel::<Answer>(s.max_in_flight);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let writer_failed = CancellationToken::new();

    let write_side = {
        let reg = reg.clone();
        let in_flight = in_flight.clone();
        let writer_failed = writer_failed.clone();
        async move {
            while let Some(answer) = rx.recv().await {
                let reply = match answer {
                    Answer::Now(b) => b,
                    Answer::Outcome { rx, header } => {
                        let outcome = outcome_of(rx).await;
                        reply_for(&reg, outcome, header.as_deref())
                    }
                };
                in_flight.fetch_sub(1, Ordering::SeqCst);
                let Some(reply) = reply else { continue };
                let sent = match writer.send(reply).await {
                    Err(FrameError::Unencodable(why)) => {
                        tracing::warn!(route = %reg.route, %peer, %why, "reply cannot be framed; sending the error reply");
                        let fallback =
                            error_text(&reg.settings.error_reply, &why, "reply", "permanent", "");
                        writer.send(Bytes::from(fallback)).await
                    }
                    other => other,
                };
                if let Err(e) = sent {
                    tracing::debug!(route = %reg.route, %peer, error = %e, "tcp reply not sent; closing");
                    writer_failed.cancel();
                    return;
                }
            }
            let _ = SinkExt::<Bytes>::close(&mut writer).await;
        }
    };

    let read_side = async {
        loop {
            let next = tokio::select! {
                _ = reg.shutdown.cancelled() => break,
                _ = writer_failed.cancelled() => break,
                n = tokio::time::timeout(s.idle_timeout, reader.next()) => n,
            };
            let frame = match next {
                Err(_) if in_flight.load(Ordering::SeqCst) > 0 => continue,
                Err(_) => {
                    tracing::info!(route = %reg.route, %peer, timeout = ?s.idle_timeout, "tcp connection idle; closing");
                    break;
                }
                Ok(None) => {
                    if reader.decoder().pending(reader.read_buffer()) {
                        tracing::warn!(route = %reg.route, %peer, bytes = reader.read_buffer().len(), "peer closed the connection mid-frame; partial frame discarded");
                    }
                    break;
                }
                Ok(Some(Err(e))) => {
                    tracing::warn!(route = %reg.route, %peer, error = %e, "bad frame; closing the connection");
                    metrics::counter!("ferry_tcp_frames_rejected_total", "route" => reg.route.to_string()).increment(1);
                    break;
                }
                Ok(Some(Ok(frame))) => frame,
            };
            metrics::counter!("ferry_tcp_frames_total", "route" => reg.route.to_string())
                .increment(1);
            in_flight.fetch_add(1, Ordering::SeqCst);
            let answer = tokio::select! {
                _ = reg.shutdown.cancelled() => break,
                a = take(&reg, frame, peer) => a,
            };
            if tx.send(answer).await.is_err() {
                break;
            }
        }
        drop(tx);
    };
    tokio::join!(read_side, write_side);
    tracing::debug!(route = %reg.route, %peer, "tcp connection closed");
}

/// Turn a frame into a message and submit it; or answer at once.
async fn take(reg: &Registration, frame: Bytes, peer: SocketAddr) -> Answer {
    let s = &reg.settings;
    let header = if s.reply == ReplyMode::Hl7Ack {
        let h = hl7::Header::read(&frame);
        if let Some(problem) = &h.problem {
            tracing::warn!(route = %reg.route, %peer, %problem, "HL7 message rejected (AR)");
            let ack = hl7::build_ack(
                &h,
                AckCode::Reject,
                Some(&problem.to_string()),
                &ack_id(),
                chrono::Utc::now(),
            );
            return Answer::Now(Some(Bytes::from(ack)));
        }
        Some(Box::new(h))
    } else {
        None
    };
    let mut msg = Message::new(
        reg.route.clone(),
        format!("tcp {} from {peer}", s.listen),
        Body::Bytes(frame),
    );
    msg.headers.insert("tcp.peer".into(), peer.to_string());
    msg.headers
        .insert("tcp.listen".into(), s.listen.to_string());
    if let Some(h) = &header {
        msg.headers
            .insert("hl7.control_id".into(), h.control_id().to_string());
        msg.headers
            .insert("hl7.message_type".into(), h.field(9).to_string());
        msg.headers
            .insert("hl7.version".into(), h.field(12).to_string());
    }
    let id = msg.id.clone();
    match reg.input.submit(msg).await {
        Ok(rx) => Answer::Outcome { rx, header },
        Err(e) => {
            let outcome = Outcome::Failed(crate::message::Failure {
                kind: FailureKind::Unavailable,
                stage: "source".into(),
                message: e.to_string(),
            });
            tracing::warn!(route = %reg.route, %peer, message_id = %id, error = %e, "frame not taken");
            Answer::Now(reply_for(reg, outcome, header.as_deref()))
        }
    }
}

/// An HL7 control id for an ACK: unique, at most 20 characters (MSH-10 in v2.5).
fn ack_id() -> String {
    let mut s = uuid::Uuid::now_v7().simple().to_string();
    s.truncate(20);
    s
}

fn error_text(template: &str, error: &str, stage: &str, kind: &str, id: &str) -> String {
    let one_line: String = error
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    template
        .replace("{error}", &one_line)
        .replace("{stage}", stage)
        .replace("{kind}", kind)
        .replace("{id}", id)
}

/// The reply to a frame, by the source's mode; `None` writes nothing.
fn reply_for(reg: &Registration, outcome: Outcome, header: Option<&hl7::Header>) -> Option<Bytes> {
    match reg.settings.reply {
        ReplyMode::None => {
            if let Outcome::Failed(f) = &outcome {
                tracing::warn!(route = %reg.route, error = %f, "one-way tcp message failed (the peer is not told)");
            }
            None
        }
        ReplyMode::Result => Some(match outcome {
            // A JSON string result is sent as its text, not as a quoted string.
            Outcome::Delivered(m) => match m.body {
                Body::Json(serde_json::Value::String(s)) => Bytes::from(s),
                other => other.to_bytes(),
            },
            Outcome::Dropped { .. } => Bytes::new(),
            Outcome::DeadLettered(f) | Outcome::Failed(f) => {
                let kind = format!("{:?}", f.kind).to_ascii_lowercase();
                Bytes::from(error_text(
                    &reg.settings.error_reply,
                    &f.message,
                    &f.stage,
                    &kind,
                    "",
                ))
            }
        }),
        ReplyMode::Hl7Ack => {
            let fallback;
            let header = match header {
                Some(h) => h,
                None => {
                    fallback = hl7::Header::default();
                    &fallback
                }
            };
            let (code, text) = match &outcome {
                Outcome::Delivered(_) | Outcome::Dropped { .. } | Outcome::DeadLettered(_) => {
                    (AckCode::Accept, None)
                }
                Outcome::Failed(f) if f.kind == FailureKind::Unavailable => {
                    (AckCode::Reject, Some(f.to_string()))
                }
                Outcome::Failed(f) => (AckCode::Error, Some(f.to_string())),
            };
            if let Some(t) = &text {
                tracing::info!(route = %reg.route, control_id = header.control_id(), code = code.as_str(), error = %t, "HL7 negative acknowledgement");
            }
            Some(Bytes::from(hl7::build_ack(
                header,
                code,
                text.as_deref(),
                &ack_id(),
                chrono::Utc::now(),
            )))
        }
    }
}
