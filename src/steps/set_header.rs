//! `set_header`: set a header from a literal, a JSONPath query on the body, or a
//! Rhai expression. Exactly one of `value`, `jsonpath`, `script` is given.

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::{Location, Spanned};

use super::{
    Flow, JsonPathExpr, Step, StepError, compile_script, script_failure, with_script_input,
};
use crate::config::{BuildContext, ConfigError};
use crate::jsonpath::JsonPath;
use crate::message::Message;
use crate::script::{CompiledScript, ScriptEngine, ScriptKind};

/// Options of `set_header`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetHeaderConfig {
    /// Header name (stored lower-case, like HTTP headers).
    pub name: String,
    /// A literal value.
    pub value: Option<String>,
    /// A JSONPath query on the body; its first match becomes the value.
    pub jsonpath: Option<JsonPathExpr>,
    /// A Rhai expression; its result becomes the value.
    #[schemars(with = "Option<String>")]
    pub script: Option<Spanned<String>>,
    /// What to do when the JSONPath matches nothing (default `fail`).
    #[serde(default)]
    pub on_missing: super::jsonpath::OnMissing,
}

enum Source {
    Literal(String),
    Path(JsonPath),
    Script(ScriptEngine, CompiledScript),
}

pub struct SetHeader {
    name: String,
    source: Source,
    on_missing: super::jsonpath::OnMissing,
}

impl SetHeaderConfig {
    pub fn build(&self, loc: &Location, ctx: &BuildContext) -> Result<SetHeader, ConfigError> {
        if self.name.trim().is_empty() {
            return Err(ctx.error(loc, "set_header.name is empty"));
        }
        let source = match (&self.value, &self.jsonpath, &self.script) {
            (Some(v), None, None) => Source::Literal(v.clone()),
            (None, Some(p), None) => Source::Path(p.0.clone()),
            (None, None, Some(s)) => Source::Script(
                ctx.scripts.clone(),
                compile_script(s, ScriptKind::Expression, ctx)?,
            ),
            _ => {
                return Err(ctx.error(
                    loc,
                    "set_header needs exactly one of `value`, `jsonpath` or `script`",
                ));
            }
        };
        Ok(SetHeader {
            name: self.name.trim().to_ascii_lowercase(),
            source,
            on_missing: self.on_missing,
        })
    }
}

/// Header text for a JSON value: strings as they are, others as JSON.
fn header_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[async_trait]
impl Step for SetHeader {
    async fn apply(&self, msg: &mut Message) -> Result<Flow, StepError> {
        use super::jsonpath::OnMissing;
        let value = match &self.source {
            Source::Literal(v) => v.clone(),
            Source::Path(p) => {
                let body = msg
                    .body
                    .json_mut()
                    .map_err(|e| StepError::bad_input(format!("set_header {}: {e}", self.name)))?;
                match p.query_one(body) {
                    Some(v) => header_text(&v),
                    None => match self.on_missing {
                        OnMissing::Fail => {
                            return Err(StepError::bad_input(format!(
                                "set_header {}: `{}` matched nothing",
                                self.name,
                                p.as_str()
                            )));
                        }
                        OnMissing::Drop => {
                            return Ok(Flow::Drop(format!(
                                "set_header {}: `{}` matched nothing",
                                self.name,
                                p.as_str()
                            )));
                        }
                        OnMissing::Null => String::new(),
                    },
                }
            }
            Source::Script(engine, script) => {
                let v = with_script_input(msg, |input| engine.eval_value(script, input))?
                    .map_err(|e| script_failure("set_header", e))?;
                header_text(&v)
            }
        };
        msg.headers.insert(self.name.clone(), value);
        Ok(Flow::Continue)
    }
}
