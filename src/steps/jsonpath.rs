//! `jsonpath`: replace the body with the result of an RFC 9535 JSONPath query.
//!
//! One match becomes the body as it is; several become an array (or always an
//! array with `many: true`). No match fails the message unless `on_missing`
//! says otherwise.

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Location;

use super::{Flow, FromShort, JsonPathExpr, Step, StepError};
use crate::config::{BuildContext, ConfigError};
use crate::jsonpath::JsonPath;
use crate::message::{Body, Message};

/// Options of `jsonpath` (or just the path: `jsonpath: "$.order"`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonPathConfig {
    /// The query, e.g. `$.order.lines[?@.qty > 0]`.
    pub path: JsonPathExpr,
    /// Always produce an array, even for one match (default false).
    #[serde(default)]
    pub many: bool,
    /// What to do when nothing matches (default `fail`).
    #[serde(default)]
    pub on_missing: OnMissing,
}

/// What `jsonpath` does when the query matches nothing.
#[derive(Debug, Default, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnMissing {
    /// Fail the message (bad input).
    #[default]
    Fail,
    /// Set the body to `null` (or `[]` with `many: true`).
    Null,
    /// Drop the message (acknowledged as handled).
    Drop,
}

impl FromShort for JsonPathConfig {
    fn from_short(s: String) -> Result<Self, String> {
        let path = JsonPath::compile(&s).map_err(|e| format!("invalid JSONPath `{s}`: {e}"))?;
        Ok(JsonPathConfig {
            path: JsonPathExpr(path),
            many: false,
            on_missing: OnMissing::Fail,
        })
    }
}

impl JsonPathConfig {
    pub fn build(&self, _loc: &Location, _ctx: &BuildContext) -> Result<JsonPathStep, ConfigError> {
        Ok(JsonPathStep {
            path: self.path.0.clone(),
            many: self.many,
            on_missing: self.on_missing,
        })
    }
}

pub struct JsonPathStep {
    path: JsonPath,
    many: bool,
    on_missing: OnMissing,
}

#[async_trait]
impl Step for JsonPathStep {
    async fn apply(&self, msg: &mut Message) -> Result<Flow, StepError> {
        let value = msg
            .body
            .json_mut()
            .map_err(|e| StepError::bad_input(format!("jsonpath: {e}")))?;
        let mut found: Vec<Value> = self.path.query(value).into_iter().cloned().collect();
        let result = match (found.len(), self.many) {
            (0, _) => match self.on_missing {
                OnMissing::Fail => {
                    return Err(StepError::bad_input(format!(
                        "jsonpath: `{}` matched nothing",
                        self.path.as_str()
                    )));
                }
                OnMissing::Drop => {
                    return Ok(Flow::Drop(format!(
                        "jsonpath `{}` matched nothing",
                        self.path.as_str()
                    )));
                }
                OnMissing::Null if self.many => Value::Array(Vec::new()),
                OnMissing::Null => Value::Null,
            },
            (1, false) => found.pop().unwrap_or(Value::Null),
            _ => Value::Array(found),
        };
        msg.body = Body::Json(result);
        Ok(Flow::Continue)
    }
}
