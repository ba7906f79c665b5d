//! JSON Schema for route and connector files, generated from the config types
//! (their doc comments become descriptions), so editors can autocomplete and
//! check route files. See docs/editor-setup.md.

use crate::config::RouteFile;
use crate::connectors::ConnectorConfig;

/// Which file kind to describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaKind {
    Route,
    Connector,
}

/// The schema as pretty JSON.
pub fn schema_json(kind: SchemaKind) -> String {
    let schema = match kind {
        SchemaKind::Route => schemars::schema_for!(RouteFile),
        SchemaKind::Connector => schemars::schema_for!(ConnectorConfig),
    };
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}
