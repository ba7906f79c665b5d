//! Redis lists as a reliable queue: a source that `BLMOVE`s, a sink that
//! `LPUSH`es.
//!
//! **Invariant (ack mapping):** an element is moved atomically (`BLMOVE`)
//! from the queue to a processing list owned by this consumer
//! (`LIST:processing:CONSUMER`), and removed from it (`LREM`) only when the
//! route's outcome says handled; a failed element is moved back to the queue
//! (`LREM` + `RPUSH` in one transaction) after `retry_delay`. On start,
//! elements left in the processing list by a previous run (stopped mid-flight
//! or killed) go back to the queue first, so none is lost and none is held by
//! a consumer that is gone.
//!
//! **Sink:** `LPUSH` the body; producers push left and the source takes from
//! the right, so a `list` source reads in order.

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use super::{BLOCK, RedisConnection, explain};
use crate::connectors::SourceContext;
use crate::connectors::broker::{InFlight, failure_text};
use crate::message::{Body, Message};
use crate::template::Template;

/// A `list:` source: the queue and this consumer's processing list.
pub(super) struct ListSource {
    pub(super) key: String,
    pub(super) processing: String,
    pub(super) retry_delay: Duration,
}

impl ListSource {
    /// One connected session of a list source; Ok(()) when asked to stop.
    pub(super) async fn session(
        &self,
        ctx: &mut SourceContext,
        shared: &RedisConnection,
        in_flight: &InFlight,
        started: &mut bool,
    ) -> Result<(), String> {
        let (key, processing) = (&self.key, &self.processing);
        let mut con = shared.dedicated(BLOCK).await?;
        shared.manager().await?;
        // A previous run's unfinished elements go back to the queue first.
        loop {
            let moved: Option<Vec<u8>> = redis::cmd("LMOVE")
                .arg(processing)
                .arg(key)
                .arg("LEFT")
                .arg("RIGHT")
                .query_async(&mut con)
                .await
                .map_err(|e| explain(format!("LMOVE {processing} → {key}: {e}")))?;
            if moved.is_none() {
                break;
            }
        }
        if !*started {
            *started = true;
            ctx.ready();
        }
        loop {
            let mut blmove = redis::cmd("BLMOVE");
            blmove
                .arg(key)
                .arg(processing)
                .arg("RIGHT")
                .arg("LEFT")
                .arg(BLOCK.as_secs_f64());
            let item: Option<Vec<u8>> = tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                r = blmove.query_async(&mut con) => r.map_err(|e| format!("BLMOVE: {e}"))?,
            };
            let Some(item) = item else { continue };
            let mut msg = Message::new(
                ctx.route_id.clone(),
                format!("redis list {key}"),
                Body::Bytes(bytes::Bytes::from(item.clone())),
            );
            msg.headers.insert("redis.list".into(), key.clone());
            let rx = tokio::select! {
                // Left in the processing list: the next start moves it back.
                _ = ctx.shutdown.cancelled() => return Ok(()),
                r = ctx.input.submit(msg) => match r { Ok(rx) => rx, Err(_) => return Ok(()) },
            };
            let manager = shared.manager().await;
            let (key, processing, delay) = (key.clone(), processing.clone(), self.retry_delay);
            let route = ctx.route_id.clone();
            in_flight.settle(rx, move |outcome| async move {
                let handled = outcome.is_handled();
                if !handled {
                    tracing::debug!(route = %route, error = %failure_text(&outcome), "redis list: element goes back to the queue");
                    tokio::time::sleep(delay).await;
                }
                let result = async {
                    let mut m = manager?;
                    let mut pipe = redis::pipe();
                    pipe.atomic().lrem(&processing, 1, &item).ignore();
                    if !handled {
                        pipe.rpush(&key, &item).ignore();
                    }
                    pipe.query_async::<()>(&mut m).await.map_err(|e| e.to_string())
                }
                .await;
                if let Err(e) = result {
                    tracing::warn!(route = %route, error = %e, "redis list: cannot settle an element; it stays in the processing list until the next start");
                }
            });
        }
    }
}

/// `LPUSH` one message's body onto the list its template names.
pub(super) async fn lpush(
    m: &mut ConnectionManager,
    key: &Template,
    msg: &Message,
    body: &[u8],
) -> redis::RedisResult<()> {
    m.lpush::<_, _, usize>(key.render(msg), body)
        .await
        .map(|_| ())
}
