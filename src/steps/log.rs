//! `log`: write a log line per message from a template, e.g.
//! `log: "order {header.order-id} from {source}"`. Logging never fails a message.

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Location;

use super::{Flow, FromShort, Step, StepError};
use crate::config::{BuildContext, ConfigError};
use crate::message::Message;
use crate::template::Template;

/// Options of `log` (or just the message template).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Template: `{id}`, `{route}`, `{source}`, `{header.NAME}`, `{meta.KEY}`,
    /// `{body}`, `{timestamp}`, `{date}`, `{time}`.
    pub message: String,
    /// `error`, `warn`, `info` (default), `debug` or `trace`.
    #[serde(default)]
    pub level: Level,
}

/// Log level of a `log` step.
#[derive(Debug, Default, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl FromShort for LogConfig {
    fn from_short(message: String) -> Result<Self, String> {
        Ok(LogConfig {
            message,
            level: Level::Info,
        })
    }
}

impl LogConfig {
    pub fn build(&self, loc: &Location, ctx: &BuildContext) -> Result<Log, ConfigError> {
        let template =
            Template::parse(&self.message).map_err(|e| ctx.error(loc, format!("log: {e}")))?;
        Ok(Log {
            template,
            level: self.level,
        })
    }
}

pub struct Log {
    template: Template,
    level: Level,
}

#[async_trait]
impl Step for Log {
    async fn apply(&self, msg: &mut Message) -> Result<Flow, StepError> {
        let line = self.template.render(msg);
        let route = &*msg.meta.route;
        match self.level {
            Level::Error => tracing::error!(route, message_id = %msg.id, "{line}"),
            Level::Warn => tracing::warn!(route, message_id = %msg.id, "{line}"),
            Level::Info => tracing::info!(route, message_id = %msg.id, "{line}"),
            Level::Debug => tracing::debug!(route, message_id = %msg.id, "{line}"),
            Level::Trace => tracing::trace!(route, message_id = %msg.id, "{line}"),
        }
        Ok(Flow::Continue)
    }
}
