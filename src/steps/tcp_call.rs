//! `tcp_call`: send the body as one frame to a TCP endpoint and make the reply
//! the body for the next steps (request/reply, like Camel's `enrich` with a
//! netty endpoint). Shares its client (pool, reconnects, TLS) with the `tcp`
//! sink; takes the same options.
//!
//! With `connector: NAME` it uses the connector's shared pool, taken from the
//! engine's resources when the route starts.
//!
//! A connection error or timeout fails the message as retryable, so its
//! source redelivers it; with `reply: hl7_ack` a negative ACK fails it too.

use std::sync::Arc;

use async_trait::async_trait;
use serde_saphyr::Location;

use super::{Flow, Step, StepError};
use crate::config::{BuildContext, ConfigError};
use crate::connectors::Resources;
use crate::connectors::tcp::{ExpectReply, TcpClient, TcpClientConfig, check_reply};
use crate::message::{Body, FailureKind, Message};

pub struct TcpCall {
    client: TcpClient,
    expect: ExpectReply,
}

impl TcpCall {
    pub fn build(
        cfg: &TcpClientConfig,
        loc: &Location,
        ctx: &BuildContext,
    ) -> Result<TcpCall, ConfigError> {
        let (client, expect) = cfg.client(loc, ctx, true)?;
        Ok(TcpCall { client, expect })
    }
}

#[async_trait]
impl Step for TcpCall {
    async fn start(&self, resources: &Arc<Resources>) -> Result<(), String> {
        self.client.start(resources);
        Ok(())
    }

    async fn apply(&self, msg: &mut Message) -> Result<Flow, StepError> {
        let failed = |retryable: bool, e: String| StepError {
            kind: if retryable {
                FailureKind::Retryable
            } else {
                FailureKind::Permanent
            },
            message: format!("tcp_call {}: {e}", self.client.describe()),
        };
        let reply = self
            .client
            .call(msg.body.to_bytes(), true)
            .await
            .map_err(|e| failed(e.retryable(), e.to_string()))?
            .unwrap_or_default();
        check_reply(self.expect, &reply).map_err(|e| failed(true, e))?;
        msg.body = Body::Bytes(reply);
        msg.headers.remove("content-type");
        Ok(Flow::Continue)
    }
}
