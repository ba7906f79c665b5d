//! `queue`: the embedded durable queue as a source and a sink (see
//! [`crate::queue_store`]). The default that needs no broker: the same routes
//! move to RabbitMQ or NATS by changing the endpoint.
//!
//! **Sink.** Confirms a message once it is committed to the store.
//! **Source.** Leases messages in order and hands them to the route; a message
//! leaves the queue only when the route's outcome says it was handled
//! (delivered, dropped or dead-lettered). Otherwise it is released for
//! redelivery after `redelivery_delay` (doubling up to `max_redelivery_delay`).
//! The route's buffer and concurrency bound how many messages are leased at
//! once: a slow sink makes the source stop pulling, not Ferry's memory grow.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Location;

use super::{DeliveryError, Resources, Sink, Source, SourceContext, SourceError};
use crate::config::{BuildContext, ConfigError, HumanDuration};
use crate::message::{Message, Outcome, outcome_of};
use crate::queue_store::{QueueStore, StoredMessage, valid_queue_name};

fn check_name(name: &str, loc: &Location, ctx: &BuildContext) -> Result<(), ConfigError> {
    if valid_queue_name(name) {
        Ok(())
    } else {
        Err(ctx.error(
            loc,
            format!("queue name `{name}` may only contain letters, digits, `-`, `_` and `.`"),
        ))
    }
}

/// Options of a `queue` source.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueSourceConfig {
    /// Queue name.
    pub name: String,
    /// Wait before a message that was not handled is offered again (default 1s;
    /// doubles on each further failure of the same message).
    pub redelivery_delay: Option<HumanDuration>,
    /// Upper bound of the redelivery wait (default 60s).
    pub max_redelivery_delay: Option<HumanDuration>,
}

impl QueueSourceConfig {
    pub fn build(&self, loc: &Location, ctx: &BuildContext) -> Result<QueueSource, ConfigError> {
        check_name(&self.name, loc, ctx)?;
        Ok(QueueSource {
            name: self.name.clone(),
            delay: self
                .redelivery_delay
                .map_or(Duration::from_secs(1), |d| d.0),
            max_delay: self
                .max_redelivery_delay
                .map_or(Duration::from_secs(60), |d| d.0),
        })
    }
}

pub struct QueueSource {
    name: String,
    delay: Duration,
    max_delay: Duration,
}

#[async_trait]
impl Source for QueueSource {
    async fn run(&self, mut ctx: SourceContext) -> Result<(), SourceError> {
        let store = ctx
            .resources
            .queue_store()
            .await
            .map_err(|e| SourceError(e.to_string()))?;
        ctx.ready();
        // Failures per message id, for the growing redelivery delay (in memory:
        // a restart starts over, which only shortens the wait).
        let failures: Arc<Mutex<HashMap<String, u32>>> = Default::default();
        let pending = tokio_util::task::TaskTracker::new();
        loop {
            let lease = tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                r = store.dequeue(&self.name) => match r {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(queue = %self.name, error = %e, "cannot read queue; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                },
            };
            let stored = &lease.message;
            let mut msg = Message::new(
                ctx.route_id.clone(),
                format!("queue {}", self.name),
                stored.body.clone(),
            );
            // Keep the id so receivers can deduplicate redeliveries.
            msg.id = stored.id.clone();
            msg.headers = stored.headers.clone();
            let rx = tokio::select! {
                _ = ctx.shutdown.cancelled() => {
                    store.nack(lease, Duration::ZERO);
                    break;
                }
                r = ctx.input.submit(msg) => match r {
                    Ok(rx) => rx,
                    Err(_) => {
                        store.nack(lease, Duration::ZERO);
                        break;
                    }
                },
            };
            let (store, failures, route) = (store.clone(), failures.clone(), ctx.route_id.clone());
            let (base, max) = (self.delay, self.max_delay);
            pending.spawn(async move {
                let outcome = outcome_of(rx).await;
                let id = lease.message.id.clone();
                if outcome.is_handled() {
                    failures.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                    if let Err(e) = store.ack(&lease).await {
                        // Still stored: it will be delivered again after a restart.
                        tracing::error!(route = %route, message_id = %id, error = %e, "cannot ack queue message");
                    }
                } else {
                    let n = {
                        let mut f = failures.lock().unwrap_or_else(|p| p.into_inner());
                        let n = f.entry(id.clone()).or_insert(0);
                        *n += 1;
                        *n
                    };
                    let delay = base.saturating_mul(2u32.saturating_pow(n.saturating_sub(1).min(16))).min(max);
                    if let Outcome::Failed(f) = &outcome {
                        tracing::warn!(route = %route, message_id = %id, error = %f, redeliver_in = ?delay, "queue message not handled; it stays queued");
                    }
                    store.nack(lease, delay);
                }
            });
        }
        pending.close();
        pending.wait().await;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("queue {}", self.name)
    }
}

/// Options of a `queue` sink.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueSinkConfig {
    /// Queue name.
    pub name: String,
}

impl QueueSinkConfig {
    pub fn build(&self, loc: &Location, ctx: &BuildContext) -> Result<QueueSink, ConfigError> {
        check_name(&self.name, loc, ctx)?;
        Ok(QueueSink {
            name: self.name.clone(),
            store: OnceLock::new(),
        })
    }
}

pub struct QueueSink {
    name: String,
    store: OnceLock<QueueStore>,
}

#[async_trait]
impl Sink for QueueSink {
    async fn start(&self, resources: &Arc<Resources>) -> Result<(), String> {
        let store = resources.queue_store().await.map_err(|e| e.to_string())?;
        let _ = self.store.set(store);
        Ok(())
    }

    async fn deliver(&self, msg: &Message) -> Result<(), DeliveryError> {
        let store = self
            .store
            .get()
            .ok_or_else(|| DeliveryError::retryable("queue sink used before its route started"))?;
        store
            .enqueue(&self.name, &StoredMessage::from_message(msg))
            .await
            .map(|_| ())
            .map_err(|e| DeliveryError::retryable(e.to_string()))
    }

    fn describe(&self) -> String {
        format!("queue {}", self.name)
    }
}
