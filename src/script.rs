//! PLACEHOLDER replaced by the real sandbox.
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ScriptLimits {
    pub max_operations: u64,
}
#[derive(Clone)]
pub struct ScriptEngine;
#[derive(Clone, Debug)]
pub struct CompiledScript;
pub enum ScriptKind {
    Statements,
    Expression,
}
pub struct ScriptMessage {
    pub body: serde_json::Value,
    pub headers: BTreeMap<String, String>,
    pub meta: serde_json::Map<String, serde_json::Value>,
}
pub enum RunOutcome {
    Continue,
    Dropped,
}
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ScriptError {
    pub message: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub kind: ScriptErrorKind,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptErrorKind {
    Syntax,
    Runtime,
    Limit,
}
impl ScriptEngine {
    pub fn new(_l: &ScriptLimits) -> Self {
        ScriptEngine
    }
    pub fn compile(&self, _s: &str, _k: ScriptKind) -> Result<CompiledScript, ScriptError> {
        Ok(CompiledScript)
    }
    pub fn run(
        &self,
        _s: &CompiledScript,
        _m: &mut ScriptMessage,
    ) -> Result<RunOutcome, ScriptError> {
        Ok(RunOutcome::Continue)
    }
    pub fn eval_bool(&self, _s: &CompiledScript, _m: &ScriptMessage) -> Result<bool, ScriptError> {
        Ok(true)
    }
    pub fn eval_value(
        &self,
        _s: &CompiledScript,
        _m: &ScriptMessage,
    ) -> Result<serde_json::Value, ScriptError> {
        Ok(serde_json::Value::Null)
    }
}
