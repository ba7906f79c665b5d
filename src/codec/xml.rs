//! PLACEHOLDER replaced by the real codec.
use serde_json::Value;
#[derive(Debug, Default, Clone)]
pub struct ArrayPaths;
impl ArrayPaths {
    pub fn parse(_p: &[String]) -> Result<ArrayPaths, String> {
        Ok(ArrayPaths)
    }
    pub fn is_empty(&self) -> bool {
        true
    }
}
#[derive(Debug, Default, Clone)]
pub struct XmlToJsonOptions {
    pub arrays: ArrayPaths,
    pub strip_namespaces: bool,
    pub infer_types: bool,
    pub max_depth: usize,
    pub max_bytes: usize,
}
#[derive(Debug, Default, Clone)]
pub struct JsonToXmlOptions {
    pub root: Option<String>,
    pub declaration: bool,
    pub indent: Option<usize>,
}
#[derive(Debug, thiserror::Error)]
#[error("xml")]
pub struct XmlError;
pub fn xml_to_json(_i: &[u8], _o: &XmlToJsonOptions) -> Result<Value, XmlError> {
    Err(XmlError)
}
pub fn json_to_xml(_v: &Value, _o: &JsonToXmlOptions) -> Result<Vec<u8>, XmlError> {
    Err(XmlError)
}
