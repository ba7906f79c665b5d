//! Redis pub/sub: a source that `SUBSCRIBE`s (or `PSUBSCRIBE`s to a
//! pattern), a sink that `PUBLISH`es.
//!
//! **Invariant (ack mapping): there is none.** Redis pub/sub delivers a
//! message to whoever is subscribed at that moment and keeps nothing, so a
//! message whose route fails is lost (logged at warn, never redelivered), and
//! messages published while the source is reconnecting are never seen. Use a
//! stream or a list when a message must survive a failure.
//!
//! Pub/sub needs a connection of its own (a subscribed connection takes no
//! other commands); it is made per session, and the shared one is not used.

use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use futures_util::StreamExt;

use super::{RedisConnection, explain};
use crate::connectors::SourceContext;
use crate::connectors::broker::{InFlight, failure_text, with_timeout};
use crate::message::{Body, Message};
use crate::template::Template;

/// A `channel:` source: one channel, or a pattern of channels.
pub(super) struct ChannelSource {
    pub(super) channel: String,
    pub(super) pattern: bool,
}

impl ChannelSource {
    /// One subscribed session; Ok(()) when asked to stop.
    pub(super) async fn session(
        &self,
        ctx: &mut SourceContext,
        shared: &RedisConnection,
        in_flight: &InFlight,
        started: &mut bool,
    ) -> Result<(), String> {
        let channel = &self.channel;
        let client = shared.settings.client()?;
        let mut pubsub = with_timeout(
            shared.settings.connect_timeout,
            &format!("cannot connect to redis {}", shared.settings.shown()),
            client.get_async_pubsub(),
        )
        .await
        .map_err(explain)?;
        let subscribed = if self.pattern {
            pubsub.psubscribe(channel).await
        } else {
            pubsub.subscribe(channel).await
        };
        subscribed.map_err(|e| explain(format!("SUBSCRIBE {channel}: {e}")))?;
        if !*started {
            *started = true;
            ctx.ready();
        }
        let mut messages = pubsub.on_message();
        loop {
            let m = tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                m = messages.next() => m,
            };
            let Some(m) = m else {
                return Err("pub/sub connection closed".into());
            };
            let mut msg = Message::new(
                ctx.route_id.clone(),
                format!("redis channel {channel}"),
                Body::Bytes(bytes::Bytes::copy_from_slice(m.get_payload_bytes())),
            );
            msg.headers
                .insert("redis.channel".into(), m.get_channel_name().to_string());
            let rx = tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                r = ctx.input.submit(msg) => match r { Ok(rx) => rx, Err(_) => return Ok(()) },
            };
            let route = ctx.route_id.clone();
            in_flight.settle(rx, move |outcome| async move {
                if !outcome.is_handled() {
                    tracing::warn!(route = %route, error = %failure_text(&outcome), "redis pub/sub: message failed and cannot be redelivered");
                }
            });
        }
    }
}

/// `PUBLISH` one message's body on the channel its template names.
pub(super) async fn publish(
    m: &mut ConnectionManager,
    channel: &Template,
    msg: &Message,
    body: &[u8],
) -> redis::RedisResult<()> {
    m.publish::<_, _, usize>(channel.render(msg), body)
        .await
        .map(|_| ())
}
