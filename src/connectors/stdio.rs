//! `stdin` source and `stdout` sink: the two ends of a terminal, for demos,
//! scripts and tests (`cat orders.xml | ferry run`). Kept in one file because
//! they are the two halves of one device.
//!
//! The stdin source reads one message per line (or the whole input as one
//! message with `whole: true`) and waits for each line's outcome before reading
//! the next, so output keeps the input's order; at end of input it stops
//! taking input. The
//! stdout sink writes each body followed by a newline and flushes, so a
//! delivered message is on the terminal when the ack is given.

use async_trait::async_trait;
use bytes::Bytes;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Location;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::{DeliveryError, Sink, Source, SourceContext, SourceError};
use crate::config::{BuildContext, ConfigError};
use crate::message::{Body, Message, Outcome, outcome_of};

/// Options of a `stdin` source.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdinSourceConfig {
    /// Read all of standard input as one message instead of one per line.
    #[serde(default)]
    pub whole: bool,
}

impl StdinSourceConfig {
    pub fn build(&self, _loc: &Location, _ctx: &BuildContext) -> Result<StdinSource, ConfigError> {
        Ok(StdinSource { whole: self.whole })
    }
}

pub struct StdinSource {
    whole: bool,
}

#[async_trait]
impl Source for StdinSource {
    async fn run(&self, mut ctx: SourceContext) -> Result<(), SourceError> {
        ctx.ready();
        let mut reader = BufReader::new(tokio::io::stdin());
        loop {
            let mut buf = Vec::new();
            let read = tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                r = async {
                    if self.whole { reader.read_to_end(&mut buf).await } else { reader.read_until(b'\n', &mut buf).await }
                } => r,
            };
            match read {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(SourceError(format!("cannot read stdin: {e}"))),
            }
            if !self.whole {
                while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    buf.pop();
                }
            }
            let msg = Message::new(ctx.route_id.clone(), "stdin", Body::Bytes(Bytes::from(buf)));
            let Ok(rx) = ctx.input.submit(msg).await else {
                break;
            };
            if let Outcome::Failed(f) = outcome_of(rx).await {
                tracing::error!(route = %ctx.route_id, error = %f, "stdin message failed");
            }
            if self.whole {
                break;
            }
        }
        Ok(())
    }

    fn claims(&self) -> Vec<String> {
        vec!["stdin".into()]
    }

    fn describe(&self) -> String {
        "stdin".into()
    }
}

/// Options of a `stdout` sink.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {
    /// Pretty-print JSON bodies (default false: one line per message).
    #[serde(default)]
    pub pretty: bool,
}

impl StdoutSinkConfig {
    pub fn build(&self, _loc: &Location, _ctx: &BuildContext) -> Result<StdoutSink, ConfigError> {
        Ok(StdoutSink {
            pretty: self.pretty,
        })
    }
}

pub struct StdoutSink {
    pretty: bool,
}

#[async_trait]
impl Sink for StdoutSink {
    async fn deliver(&self, msg: &Message) -> Result<(), DeliveryError> {
        let mut out = match (&msg.body, self.pretty) {
            (Body::Json(v), true) => serde_json::to_vec_pretty(v).unwrap_or_default(),
            (body, _) => body.to_bytes().to_vec(),
        };
        out.push(b'\n');
        let mut stdout = tokio::io::stdout();
        stdout
            .write_all(&out)
            .await
            .map_err(|e| DeliveryError::retryable(format!("cannot write stdout: {e}")))?;
        stdout
            .flush()
            .await
            .map_err(|e| DeliveryError::retryable(format!("cannot flush stdout: {e}")))
    }

    fn describe(&self) -> String {
        "stdout".into()
    }
}
