//! PLACEHOLDER replaced by the real wrapper.
#[derive(Clone, Debug)]
pub struct JsonPath {
    source: String,
}
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct JsonPathError {
    pub message: String,
    pub position: Option<usize>,
}
impl JsonPath {
    pub fn compile(p: &str) -> Result<JsonPath, JsonPathError> {
        Ok(JsonPath { source: p.into() })
    }
    pub fn query<'a>(&self, _v: &'a serde_json::Value) -> Vec<&'a serde_json::Value> {
        vec![]
    }
    pub fn query_one(&self, _v: &serde_json::Value) -> Option<serde_json::Value> {
        None
    }
    pub fn as_str(&self) -> &str {
        &self.source
    }
}
