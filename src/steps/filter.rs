//! `filter`: keep a message only when a Rhai boolean expression is true.
//!
//! A false result drops the message and acknowledges it at the source (a dropped
//! message is handled, not failed). A script error fails the message; the route
//! keeps running.

use async_trait::async_trait;
use serde_saphyr::Spanned;

use super::{Flow, Step, StepError, compile_script, script_failure, with_script_input};
use crate::config::{BuildContext, ConfigError};
use crate::message::Message;
use crate::script::{CompiledScript, ScriptEngine, ScriptKind};

pub struct Filter {
    engine: ScriptEngine,
    script: CompiledScript,
    source: String,
}

impl Filter {
    pub fn build(src: &Spanned<String>, ctx: &BuildContext) -> Result<Filter, ConfigError> {
        Ok(Filter {
            engine: ctx.scripts.clone(),
            script: compile_script(src, ScriptKind::Expression, ctx)?,
            source: src.value.trim().to_string(),
        })
    }
}

#[async_trait]
impl Step for Filter {
    async fn apply(&self, msg: &mut Message) -> Result<Flow, StepError> {
        match with_script_input(msg, |input| self.engine.eval_bool(&self.script, input))? {
            Ok(true) => Ok(Flow::Continue),
            Ok(false) => Ok(Flow::Drop(format!("filter `{}` is false", self.source))),
            Err(e) => Err(script_failure("filter", e)),
        }
    }
}
