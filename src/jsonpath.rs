//! Compile-once JSONPath (RFC 9535) for the `jsonpath`, `set_header` and `split` steps.
//!
//! A route's paths are parsed by [`JsonPath::compile`] when the route file is loaded, so a bad
//! path is a configuration error that names the problem and its column; at run time a
//! [`JsonPath`] is only evaluated. The parser and evaluator are jsonpath-rust's.
//!
//! Invariant: evaluating a compiled path never fails and never panics: a query that has no
//! answer for a message yields no matches. jsonpath-rust does not promise to be panic-free, so
//! parsing and evaluation run under `catch_unwind`; a panic there becomes a compile error or an
//! empty result (this needs the default `panic = "unwind"`). Its evaluation recurses once per
//! level of the document, which is bounded by the depth limit of whatever parsed the document
//! (128 for serde_json).

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use jsonpath_rust::parser::errors::JsonPathError as ParseError;
use jsonpath_rust::parser::model::JpQuery;
use jsonpath_rust::parser::parse_json_path;
use jsonpath_rust::query::js_path_process;
use pest::error::LineColLocation;
use serde_json::Value;

/// A parsed JSONPath query, cheap to clone and share between tasks.
#[derive(Clone)]
pub struct JsonPath {
    source: String,
    query: Arc<JpQuery>,
}

/// A JSONPath that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct JsonPathError {
    /// What is wrong with the path, without the position.
    pub message: String,
    /// 1-based column (in characters) of the problem within the path, when the parser says.
    pub position: Option<usize>,
}

impl fmt::Display for JsonPathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(column) => write!(f, "at column {column}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl From<ParseError> for JsonPathError {
    fn from(err: ParseError) -> Self {
        match err {
            ParseError::PestError(pest) => {
                let column = match pest.line_col {
                    LineColLocation::Pos((_, column)) | LineColLocation::Span((_, column), _) => {
                        column
                    }
                };
                Self {
                    message: pest
                        .renamed_rules(readable_rule)
                        .variant
                        .message()
                        .into_owned(),
                    position: Some(column),
                }
            }
            other => Self {
                message: other.to_string(),
                position: None,
            },
        }
    }
}

/// Grammar rule names as a route author can read them in "expected …" messages.
fn readable_rule(rule: &impl fmt::Debug) -> String {
    match format!("{rule:?}").as_str() {
        "EOI" => "end of path".to_string(),
        "jp_query" => "a query starting with $".to_string(),
        "ALPHA" => "a letter".to_string(),
        "DIGIT" => "a digit".to_string(),
        other => other.replace('_', " "),
    }
}

impl JsonPath {
    /// Parses a path once. The error names the problem and, for syntax errors, the column.
    pub fn compile(path: &str) -> Result<JsonPath, JsonPathError> {
        let parsed = catch_unwind(|| parse_json_path(path)).map_err(|_| JsonPathError {
            message: "the JSONPath parser failed on this path".to_string(),
            position: None,
        })?;
        Ok(JsonPath {
            source: path.to_string(),
            query: Arc::new(parsed?),
        })
    }

    /// All nodes the path selects, in the order RFC 9535 defines; empty when nothing matches.
    pub fn query<'a>(&self, value: &'a Value) -> Vec<&'a Value> {
        match catch_unwind(AssertUnwindSafe(|| js_path_process(&self.query, value))) {
            Ok(Ok(found)) => found.into_iter().map(|node| node.val()).collect(),
            // The evaluator only errs when a whole query reduces to a computed value, which a
            // parsed RFC 9535 query cannot; either way "no match" is the honest answer.
            Ok(Err(_)) | Err(_) => Vec::new(),
        }
    }

    /// The first node the path selects, if any.
    pub fn query_one(&self, value: &Value) -> Option<Value> {
        self.query(value).first().map(|node| (*node).clone())
    }

    /// The result of the `jsonpath` step: nothing selected → `null`, one node → that node,
    /// several → an array of them.
    pub fn select(&self, value: &Value) -> Value {
        let mut found = self.query(value);
        match found.len() {
            0 => Value::Null,
            1 => found.swap_remove(0).clone(),
            _ => Value::Array(found.into_iter().cloned().collect()),
        }
    }

    /// The path as written in the route file.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Debug for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JsonPath").field(&self.source).finish()
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order() -> Value {
        json!({"order": {"@id": "A-17", "line": [{"sku": "x", "qty": 2}, {"sku": "y", "qty": 5}]}})
    }

    #[test]
    fn compiled_path_queries_many_documents() {
        let path = JsonPath::compile("$.order.line[?@.qty > 1].sku").expect("valid path");
        assert_eq!(path.query(&order()), vec![&json!("x"), &json!("y")]);
        assert_eq!(path.query(&json!({"order": {}})), Vec::<&Value>::new());
        assert_eq!(path.as_str(), "$.order.line[?@.qty > 1].sku");
    }

    #[test]
    fn query_one_returns_the_first_match() {
        let path = JsonPath::compile("$.order['@id']").expect("valid path");
        assert_eq!(path.query_one(&order()), Some(json!("A-17")));
        assert_eq!(path.query_one(&json!([])), None);
    }

    #[test]
    fn select_unwraps_a_single_match_and_wraps_several() {
        let one = JsonPath::compile("$.order.line[0]").expect("valid path");
        assert_eq!(one.select(&order()), json!({"sku": "x", "qty": 2}));
        let many = JsonPath::compile("$..qty").expect("valid path");
        assert_eq!(many.select(&order()), json!([2, 5]));
        let none = JsonPath::compile("$.nothing").expect("valid path");
        assert_eq!(none.select(&order()), Value::Null);
    }

    #[test]
    fn syntax_error_names_the_column() {
        let err = JsonPath::compile("$.order[?@.qty >]").expect_err("invalid path");
        assert!(err.position.is_some(), "{err}");
        assert!(err.to_string().starts_with("at column "), "{err}");
        let err = JsonPath::compile("order.id").expect_err("a path starts with $");
        assert_eq!(err.position, Some(1), "{err}");
    }

    #[test]
    fn excessive_nesting_is_a_compile_error() {
        let path = format!("$[?{}@.a{}]", "(".repeat(10_000), ")".repeat(10_000));
        assert!(JsonPath::compile(&path).is_err());
    }
}
