//! `script`: run Rhai statements that read and change `body`, `headers` and
//! `meta`, or call `drop()`.
//!
//! Changes are written back only when the script succeeds, so a failing script
//! never leaves a half-changed message. A string body is written back as text
//! (not as a quoted JSON string), so text stays text.

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;
use serde_saphyr::Spanned;

use super::{Flow, Step, StepError, compile_script, script_failure, script_view};
use crate::config::{BuildContext, ConfigError};
use crate::message::{Body, Message};
use crate::script::{CompiledScript, RunOutcome, ScriptEngine, ScriptKind};

/// Meta fields owned by Ferry; scripts can read them, writes are ignored.
const BUILTIN_META: [&str; 5] = ["id", "route", "source", "received_at", "attempt"];

pub struct Script {
    engine: ScriptEngine,
    script: CompiledScript,
}

impl Script {
    pub fn build(src: &Spanned<String>, ctx: &BuildContext) -> Result<Script, ConfigError> {
        Ok(Script {
            engine: ctx.scripts.clone(),
            script: compile_script(src, ScriptKind::Statements, ctx)?,
        })
    }
}

#[async_trait]
impl Step for Script {
    async fn apply(&self, msg: &mut Message) -> Result<Flow, StepError> {
        let mut view = script_view(msg)?;
        let outcome = self
            .engine
            .run(&self.script, &mut view)
            .map_err(|e| script_failure("script", e))?;
        msg.body = match view.body {
            Value::String(s) => Body::Bytes(Bytes::from(s)),
            v => Body::Json(v),
        };
        msg.headers = view.headers;
        for (k, v) in view.meta {
            if !BUILTIN_META.contains(&k.as_str()) {
                msg.meta.vars.insert(k, v);
            }
        }
        Ok(match outcome {
            RunOutcome::Continue => Flow::Continue,
            RunOutcome::Dropped => Flow::Drop("script called drop()".into()),
        })
    }
}
