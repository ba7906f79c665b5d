//! Message templates for file names and log lines: `{id}`, `{route}`,
//! `{source}`, `{attempt}`, `{header.NAME}`, `{meta.KEY}`, `{body}`, `{uuid}` (fresh
//! for each rendering),
//! `{timestamp}` (Unix milliseconds), `{date}` (YYYY-MM-DD), `{time}` (HHMMSS),
//! `{datetime}` (RFC 3339), and `{body.PATH}`: a field of a JSON body by a
//! dotted path (`{body.order.region}`, `{body.lines.0.sku}`; empty when the
//! body is not JSON or has no such field). `{{` and `}}` write literal braces.
//!
//! Templates are parsed when the route loads: an unknown placeholder is a load
//! error, never a surprise at message time.

use std::fmt::Write;

use crate::message::{Body, Message};

#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Id,
    Uuid,
    Route,
    Source,
    Attempt,
    Header(String),
    Meta(String),
    Body,
    BodyField(Vec<String>),
    Timestamp,
    Date,
    Time,
    DateTime,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => {
                                return Err(format!("unclosed `{{{name}` in template `{text}`"));
                            }
                        }
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut lit)));
                    }
                    parts.push(Self::placeholder(name.trim(), text)?);
                }
                '}' => {
                    return Err(format!(
                        "unmatched `}}` in template `{text}` (write `}}}}` for a literal)"
                    ));
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        Ok(Template { parts })
    }

    fn placeholder(name: &str, text: &str) -> Result<Part, String> {
        Ok(match name {
            "id" => Part::Id,
            "uuid" => Part::Uuid,
            "route" => Part::Route,
            "source" => Part::Source,
            "attempt" => Part::Attempt,
            "body" => Part::Body,
            "timestamp" => Part::Timestamp,
            "date" => Part::Date,
            "time" => Part::Time,
            "datetime" => Part::DateTime,
            n => {
                if let Some(h) = n.strip_prefix("header.").filter(|h| !h.is_empty()) {
                    Part::Header(h.to_ascii_lowercase())
                } else if let Some(m) = n.strip_prefix("meta.").filter(|m| !m.is_empty()) {
                    Part::Meta(m.to_string())
                } else if let Some(p) = n.strip_prefix("body.").filter(|p| !p.is_empty()) {
                    if p.split('.').any(str::is_empty) {
                        return Err(format!(
                            "empty field name in `{{{n}}}` in template `{text}`"
                        ));
                    }
                    Part::BodyField(p.split('.').map(str::to_string).collect())
                } else {
                    return Err(format!(
                        "unknown placeholder `{{{n}}}` in template `{text}` (known: id, uuid, route, source, attempt, body, body.PATH, timestamp, date, time, datetime, header.NAME, meta.KEY)"
                    ));
                }
            }
        })
    }

    pub fn render(&self, msg: &Message) -> String {
        let mut out = String::new();
        let now = msg.meta.received_at;
        for p in &self.parts {
            // Writing to a String cannot fail.
            let _ = match p {
                Part::Text(t) => write!(out, "{t}"),
                Part::Id => write!(out, "{}", msg.id),
                Part::Uuid => write!(out, "{}", uuid::Uuid::now_v7()),
                Part::Route => write!(out, "{}", msg.meta.route),
                Part::Source => write!(out, "{}", msg.meta.source),
                Part::Attempt => write!(out, "{}", msg.meta.attempt),
                Part::Header(h) => write!(
                    out,
                    "{}",
                    msg.headers.get(h).map(String::as_str).unwrap_or("")
                ),
                Part::Meta(k) => match msg.meta.vars.get(k) {
                    Some(serde_json::Value::String(s)) => write!(out, "{s}"),
                    Some(v) => write!(out, "{v}"),
                    None => Ok(()),
                },
                Part::Body => match &msg.body {
                    Body::Bytes(b) => write!(out, "{}", String::from_utf8_lossy(b)),
                    Body::Json(v) => write!(out, "{v}"),
                },
                Part::BodyField(path) => match body_field(msg, path) {
                    Some(serde_json::Value::String(s)) => write!(out, "{s}"),
                    Some(serde_json::Value::Null) | None => Ok(()),
                    Some(v) => write!(out, "{v}"),
                },
                Part::Timestamp => write!(out, "{}", now.timestamp_millis()),
                Part::Date => write!(out, "{}", now.format("%Y-%m-%d")),
                Part::Time => write!(out, "{}", now.format("%H%M%S")),
                Part::DateTime => write!(out, "{}", now.to_rfc3339()),
            };
        }
        out
    }
}

/// The value at a dotted path of a JSON body (numbers index arrays).
pub fn body_field(msg: &Message, path: &[String]) -> Option<serde_json::Value> {
    let parsed;
    let mut v = match &msg.body {
        Body::Json(v) => v,
        Body::Bytes(b) => {
            parsed = serde_json::from_slice::<serde_json::Value>(b).ok()?;
            &parsed
        }
    };
    for key in path {
        v = match v {
            serde_json::Value::Array(a) => a.get(key.parse::<usize>().ok()?)?,
            other => other.get(key)?,
        };
    }
    Some(v.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn renders_placeholders_and_escapes() {
        let mut msg = Message::new(Arc::from("orders"), "test", Body::Bytes("x".into()));
        msg.headers.insert("order-id".into(), "42".into());
        let t = Template::parse("{route}-{header.order-id}-{{x}}.json").unwrap();
        assert_eq!(t.render(&msg), "orders-42-{x}.json");
    }

    #[test]
    fn body_fields_by_dotted_path() {
        let body = serde_json::json!({"order": {"region": "eu", "lines": [{"sku": "X1"}]}});
        let msg = Message::new(Arc::from("r"), "test", Body::Json(body));
        let t = Template::parse("orders.{body.order.region}.{body.order.lines.0.sku}{body.nope}")
            .unwrap();
        assert_eq!(t.render(&msg), "orders.eu.X1");
        let raw = Message::new(Arc::from("r"), "test", Body::Bytes("{\"a\":7}".into()));
        assert_eq!(Template::parse("{body.a}").unwrap().render(&raw), "7");
        assert!(Template::parse("{body.a..b}").is_err());
    }

    #[test]
    fn unknown_placeholder_is_a_load_error() {
        let e = Template::parse("{nope}.json").unwrap_err();
        assert!(e.contains("unknown placeholder `{nope}`"), "{e}");
        assert!(Template::parse("{id").is_err());
    }
}
