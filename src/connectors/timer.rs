//! `timer`: emit a message at a fixed interval (demos, polling, heartbeats).
//!
//! The body is a fixed text (default empty) with headers `timer.count` and
//! `timer.fired_at`. A tick that finds the route busy waits (backpressure), so
//! ticks are delayed, never piled up.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Location;

use super::{Source, SourceContext, SourceError};
use crate::config::{BuildContext, ConfigError, HumanDuration};
use crate::message::{Body, Message, Outcome, outcome_of};

/// Options of a `timer` source.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimerSourceConfig {
    /// Time between messages, e.g. `5s`.
    pub interval: HumanDuration,
    /// Body of each message (default empty).
    #[serde(default)]
    pub body: String,
    /// Stop after this many messages (default: never).
    pub count: Option<u64>,
    /// Wait before the first message (default: none).
    pub delay: Option<HumanDuration>,
}

impl TimerSourceConfig {
    pub fn build(&self, loc: &Location, ctx: &BuildContext) -> Result<TimerSource, ConfigError> {
        if self.interval.0 < Duration::from_millis(1) {
            return Err(ctx.error(loc, "timer.interval must be at least 1ms"));
        }
        Ok(TimerSource {
            interval: self.interval.0,
            body: Bytes::from(self.body.clone()),
            count: self.count,
            delay: self.delay.map(|d| d.0).unwrap_or_default(),
        })
    }
}

pub struct TimerSource {
    interval: Duration,
    body: Bytes,
    count: Option<u64>,
    delay: Duration,
}

#[async_trait]
impl Source for TimerSource {
    async fn run(&self, mut ctx: SourceContext) -> Result<(), SourceError> {
        ctx.ready();
        let start = tokio::time::Instant::now() + self.delay;
        let mut ticks = tokio::time::interval_at(start, self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let pending = tokio_util::task::TaskTracker::new();
        let mut n = 0u64;
        loop {
            if self.count.is_some_and(|c| n >= c) {
                break;
            }
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                _ = ticks.tick() => {}
            }
            n += 1;
            let mut msg = Message::new(
                ctx.route_id.clone(),
                "timer",
                Body::Bytes(self.body.clone()),
            );
            msg.headers.insert("timer.count".into(), n.to_string());
            msg.headers
                .insert("timer.fired_at".into(), msg.meta.received_at.to_rfc3339());
            let rx = tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                r = ctx.input.submit(msg) => match r {
                    Ok(rx) => rx,
                    Err(_) => break,
                },
            };
            let route = ctx.route_id.clone();
            // A tick has no one to redeliver to: a failure is logged.
            pending.spawn(async move {
                if let Outcome::Failed(f) = outcome_of(rx).await {
                    tracing::warn!(route = %route, tick = n, error = %f, "timer message failed");
                }
            });
        }
        pending.close();
        pending.wait().await;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("timer every {}", humantime::format_duration(self.interval))
    }
}
