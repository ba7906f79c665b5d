//! The TCP client behind the `tcp` sink and the `tcp_call` step: a small pool
//! of framed connections to one endpoint.
//!
//! A connection is taken from the pool (or made), used for one request (and
//! its reply) at a time, and put back only if that went well; any error
//! drops it, so the next message reconnects. A pooled connection that the
//! peer closed while idle is noticed before it is used (a pending read
//! returns end-of-stream), so a one-way send is never written into a dead
//! socket that would swallow it.

use std::sync::Mutex;
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

/// A byte stream: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
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
}

impl CallError {
    /// A message that cannot be framed fails the same way every time.
    pub fn retryable(&self) -> bool {
        !matches!(self, CallError::Frame(FrameError::Unencodable(_)))
    }
}

pub struct TcpClient {
    addr: String,
    framing: Framing,
    max_frame: usize,
    timeout: Duration,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    idle: Mutex<Vec<Conn>>,
    slots: Semaphore,
}

impl TcpClient {
    pub fn new(
        addr: String,
        framing: Framing,
        max_frame: usize,
        timeout: Duration,
        pool: usize,
        tls: Option<(TlsConnector, ServerName<'static>)>,
    ) -> TcpClient {
        TcpClient {
            addr,
            framing,
            max_frame,
            timeout,
            tls,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(pool),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "tcp {} {}{}",
            self.framing.name(),
            self.addr,
            if self.tls.is_some() { " (tls)" } else { "" }
        )
    }

    /// Send one frame; with `wait_reply`, return the next frame read back.
    /// The whole call is bounded by the timeout.
    pub async fn call(&self, payload: Bytes, wait_reply: bool) -> Result<Option<Bytes>, CallError> {
        match tokio::time::timeout(self.timeout, self.call_inner(payload, wait_reply)).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout(self.timeout)),
        }
    }

    async fn call_inner(
        &self,
        payload: Bytes,
        wait_reply: bool,
    ) -> Result<Option<Bytes>, CallError> {
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
        let err = |message: String| CallError::Connect {
            addr: self.addr.clone(),
            message,
        };
        let tcp = TcpStream::connect(&self.addr)
            .await
            .map_err(|e| err(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &self.tls {
            Some((connector, name)) => Box::new(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| err(format!("tls: {e}")))?,
            ),
            None => Box::new(tcp),
        };
        Ok(Framed::new(io, self.framing.codec(self.max_frame)))
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
