//! The TCP client behind the `tcp` sink and the `tcp_call` step: a small pool
//! of framed connections to one endpoint.
//!
//! A sink or step without a connector file has a pool of its own. Those that
//! name a `kind: tcp` connector share one [`ConnectionPool`] per connector
//! (and per effective connection settings), held in [`TcpConnections`] inside
//! the engine's `Resources`: the registry keeps only weak references, so a
//! pool lives exactly as long as some route version holds it. A hot reload
//! starts the new version (which finds the pool the old one still holds)
//! before it stops the old one, so the connections survive; a changed
//! connector file changes the key, so routes rebuilt against it get a new pool.
//!
//! A connection is taken from the pool (or made), used for one request (and
//! its reply) at a time, and put back only if that went well; any error
//! drops it, so the next message reconnects. A pooled connection that the
//! peer closed while idle is noticed before it is used (a pending read
//! returns end-of-stream), so a one-way send is never written into a dead
//! socket that would swallow it.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;
use tokio_util::codec::Framed;

use crate::codec::framing::{FrameCodec, FrameError, Framing};
use crate::connectors::Resources;
use crate::connectors::broker::Pool;

/// A byte stream: plain TCP or TLS.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Conn = Framed<Box<dyn Io>, FrameCodec>;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot connect to {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("connection closed before the reply")]
    Closed,
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("used before its route started (no connection pool yet)")]
    NotStarted,
}

impl CallError {
    /// A message that cannot be framed fails the same way every time.
    pub fn retryable(&self) -> bool {
        !matches!(self, CallError::Frame(FrameError::Unencodable(_)))
    }
}

/// Where connections go and how they are framed: endpoints with equal
/// settings can use each other's connections.
#[derive(Clone)]
pub struct Endpoint {
    pub addr: String,
    pub framing: Framing,
    pub max_frame: usize,
    /// Connections open (and in use) at once.
    pub pool: usize,
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
}

/// Connections to one endpoint: at most `pool` in use at once, idle ones kept
/// for the next call.
pub struct ConnectionPool {
    endpoint: Endpoint,
    idle: Mutex<Vec<Conn>>,
    slots: Semaphore,
}

/// The pools of `tcp` connector files, shared by every route that uses the
/// same connector with the same connection settings.
#[derive(Default)]
pub struct TcpConnections {
    pools: Pool<ConnectionPool>,
}

impl TcpConnections {
    /// The live pool under `key`, or a new one for `endpoint`.
    pub fn get(&self, key: &str, endpoint: &Endpoint) -> Arc<ConnectionPool> {
        self.pools
            .get_or_insert(key, || ConnectionPool::new(endpoint.clone()))
    }
}

/// The client of one `tcp` sink or `tcp_call` step.
pub struct TcpClient {
    endpoint: Endpoint,
    /// Bounds each call; per route, so routes sharing a pool may differ.
    timeout: Duration,
    /// Key of the connector's shared pool in [`TcpConnections`]; `None`: the
    /// client has a pool of its own.
    shared: Option<String>,
    pool: OnceLock<Arc<ConnectionPool>>,
}

impl TcpClient {
    pub fn new(endpoint: Endpoint, timeout: Duration, shared: Option<String>) -> TcpClient {
        let pool = OnceLock::new();
        if shared.is_none() {
            let _ = pool.set(Arc::new(ConnectionPool::new(endpoint.clone())));
        }
        TcpClient {
            endpoint,
            timeout,
            shared,
            pool,
        }
    }

    /// Take the connector's shared pool (made by the first route that
    /// starts). A spec started again (rollback) keeps the pool it has.
    pub fn start(&self, resources: &Resources) {
        if let Some(key) = &self.shared {
            let _ = self
                .pool
                .set(resources.tcp_clients.get(key, &self.endpoint));
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "tcp {} {}{}",
            self.endpoint.framing.name(),
            self.endpoint.addr,
            if self.endpoint.tls.is_some() {
                " (tls)"
            } else {
                ""
            }
        )
    }

    /// Send one frame; with `wait_reply`, return the next frame read back.
    /// The whole call is bounded by the timeout.
    pub async fn call(&self, payload: Bytes, wait_reply: bool) -> Result<Option<Bytes>, CallError> {
        let pool = self.pool.get().ok_or(CallError::NotStarted)?;
        match tokio::time::timeout(self.timeout, pool.call(payload, wait_reply)).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout(self.timeout)),
        }
    }
}

impl ConnectionPool {
    fn new(endpoint: Endpoint) -> ConnectionPool {
        ConnectionPool {
            slots: Semaphore::new(endpoint.pool),
            endpoint,
            idle: Mutex::new(Vec::new()),
        }
    }

    async fn call(&self, payload: Bytes, wait_reply: bool) -> Result<Option<Bytes>, CallError> {
        // The semaphore is never closed, so acquiring only waits.
        let _permit = self.slots.acquire().await.map_err(|_| CallError::Closed)?;
        if let Some(conn) = self.pooled() {
            match exchange(conn, payload.clone(), wait_reply).await {
                Ok((conn, reply)) => {
                    self.put_back(conn);
                    return Ok(reply);
                }
                // The peer may have closed the pooled connection just now:
                // try once more on a fresh one.
                Err(CallError::Frame(FrameError::Io(_))) | Err(CallError::Closed) => {}
                Err(e) => return Err(e),
            }
        }
        let conn = self.connect().await?;
        let (conn, reply) = exchange(conn, payload, wait_reply).await?;
        self.put_back(conn);
        Ok(reply)
    }

    /// An idle connection that is still open.
    fn pooled(&self) -> Option<Conn> {
        loop {
            let mut conn = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
            // Nothing should be readable on an idle connection: end of
            // stream, an error or stray bytes all make it unusable.
            if conn.next().now_or_never().is_none() {
                return Some(conn);
            }
        }
    }

    fn put_back(&self, conn: Conn) {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
    }

    async fn connect(&self) -> Result<Conn, CallError> {
        let ep = &self.endpoint;
        let err = |message: String| CallError::Connect {
            addr: ep.addr.clone(),
            message,
        };
        let tcp = TcpStream::connect(&ep.addr)
            .await
            .map_err(|e| err(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &ep.tls {
            Some((connector, name)) => Box::new(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| err(format!("tls: {e}")))?,
            ),
            None => Box::new(tcp),
        };
        Ok(Framed::new(io, ep.framing.codec(ep.max_frame)))
    }
}

async fn exchange(
    mut conn: Conn,
    payload: Bytes,
    wait_reply: bool,
) -> Result<(Conn, Option<Bytes>), CallError> {
    conn.send(payload).await?;
    if !wait_reply {
        return Ok((conn, None));
    }
    match conn.next().await {
        Some(Ok(reply)) => Ok((conn, Some(reply))),
        Some(Err(e)) => Err(e.into()),
        None => Err(CallError::Closed),
    }
}
