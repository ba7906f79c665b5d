//! `hl7_to_json`: parse an HL7 v2 message (ER7) into JSON: `{"segments": [...]}`
//! in message order, each segment an object of fields keyed by their HL7
//! number (see docs/legacy.md). Sets `hl7.control_id`, `hl7.message_type` and
//! `hl7.version` headers from MSH.
//!
//! A text that is not HL7 (no MSH, bad encoding characters, a bad segment
//! name), or one that lacks a field listed in `require` or has a version not
//! in `versions`, fails the message as bad input: an MLLP source answers it
//! with AE and the reason.

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Location;

use super::{Flow, Step, StepError, text_body};
use crate::codec::hl7;
use crate::config::{BuildContext, ConfigError};
use crate::message::{Body, Message};

/// Options of `hl7_to_json`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Hl7ToJsonConfig {
    /// Fields that must be present and non-empty, as `SEG-N` or `SEG-N.C`
    /// (component), e.g. `[MSH-6, PID-3, PID-5.1]`; the first segment of that
    /// name is checked, and a missing segment fails too.
    #[serde(default)]
    pub require: Vec<String>,
    /// Accepted versions (MSH-12), e.g. `["2.5", "2.5.1"]`; default: any.
    #[serde(default)]
    pub versions: Vec<String>,
    /// Every OBX whose value type (OBX-2) is `NM` must hold a number in OBX-5.
    #[serde(default)]
    pub check_numeric_values: bool,
}

/// A `SEG-N[.C]` reference.
struct FieldRef {
    text: String,
    segment: String,
    field: String,
    component: Option<String>,
}

fn field_ref(s: &str) -> Option<FieldRef> {
    let (seg, rest) = s.trim().split_once('-')?;
    let (field, comp) = match rest.split_once('.') {
        Some((f, c)) => (f, Some(c)),
        None => (rest, None),
    };
    let ok = seg.len() == 3
        && seg
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        && field.parse::<usize>().is_ok_and(|n| n >= 1)
        && comp.is_none_or(|c| c.parse::<usize>().is_ok_and(|n| n >= 1));
    ok.then(|| FieldRef {
        text: s.trim().to_string(),
        segment: seg.into(),
        field: field.into(),
        component: comp.map(str::to_string),
    })
}

impl Hl7ToJsonConfig {
    pub fn build(&self, loc: &Location, ctx: &BuildContext) -> Result<Hl7ToJson, ConfigError> {
        let mut require = Vec::new();
        for r in &self.require {
            require.push(field_ref(r).ok_or_else(|| {
                ctx.error(
                    loc,
                    format!("hl7_to_json.require: `{r}` is not a field like MSH-6 or PID-5.1"),
                )
            })?);
        }
        Ok(Hl7ToJson {
            require,
            versions: self.versions.clone(),
            numeric: self.check_numeric_values,
        })
    }
}

pub struct Hl7ToJson {
    require: Vec<FieldRef>,
    versions: Vec<String>,
    numeric: bool,
}

impl Hl7ToJson {
    fn check(&self, v: &Value) -> Result<(), String> {
        let segs = v["segments"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        for r in &self.require {
            let seg = segs
                .iter()
                .find(|s| s["segment"] == r.segment.as_str())
                .ok_or_else(|| format!("required segment {} is missing", r.segment))?;
            let mut value = &seg[r.field.as_str()];
            if let Value::Array(reps) = value {
                value = reps.first().unwrap_or(&Value::Null);
            }
            if let Some(c) = &r.component {
                value = match value {
                    Value::Object(_) => &value[c.as_str()],
                    _ if c == "1" => value,
                    _ => &Value::Null,
                };
            }
            let empty = match value {
                Value::Null => true,
                Value::String(s) => s.is_empty(),
                _ => false,
            };
            if empty {
                return Err(format!("required field {} is empty", r.text));
            }
        }
        if self.numeric {
            for (i, seg) in segs.iter().enumerate() {
                if seg["segment"] != "OBX" || seg["2"] != "NM" {
                    continue;
                }
                let ok = match &seg["5"] {
                    Value::Null => true,
                    Value::String(t) => t.trim().parse::<f64>().is_ok(),
                    _ => false,
                };
                if !ok {
                    return Err(format!(
                        "segment {} (OBX-1 {}): OBX-5 `{}` is not a number, but OBX-2 is NM",
                        i + 1,
                        seg["1"].as_str().unwrap_or("?"),
                        seg["5"].as_str().unwrap_or("(structured)")
                    ));
                }
            }
        }
        if !self.versions.is_empty() {
            let version = msh_text(v, "12");
            let version = version.split('^').next().unwrap_or("");
            if !self.versions.iter().any(|a| a == version) {
                return Err(format!(
                    "version `{version}` (MSH-12) is not accepted (accepted: {})",
                    self.versions.join(", ")
                ));
            }
        }
        Ok(())
    }
}

/// Text of MSH-`n` (of the first MSH, also in a batch) in the JSON form,
/// components joined with `^`.
fn msh_text(v: &Value, n: &str) -> String {
    let msh = v["segments"]
        .as_array()
        .and_then(|segs| segs.iter().find(|s| s["segment"] == "MSH"));
    match msh.and_then(|m| m.get(n)) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(parts)) => {
            let mut out: Vec<String> = Vec::new();
            for (k, p) in parts {
                let i: usize = k.parse().unwrap_or(1);
                out.resize(i.max(out.len()), String::new());
                if let (Some(slot), Some(s)) = (out.get_mut(i.saturating_sub(1)), p.as_str()) {
                    *slot = s.to_string();
                }
            }
            out.join("^")
        }
        _ => String::new(),
    }
}

#[async_trait]
impl Step for Hl7ToJson {
    async fn apply(&self, msg: &mut Message) -> Result<Flow, StepError> {
        let bytes = text_body(msg, "hl7_to_json")?;
        let v =
            hl7::to_json(&bytes).map_err(|e| StepError::bad_input(format!("hl7_to_json: {e}")))?;
        self.check(&v)
            .map_err(|e| StepError::bad_input(format!("hl7_to_json: {e}")))?;
        for (header, field) in [
            ("hl7.control_id", "10"),
            ("hl7.message_type", "9"),
            ("hl7.version", "12"),
        ] {
            msg.headers.insert(header.into(), msh_text(&v, field));
        }
        msg.body = Body::Json(v);
        msg.headers
            .insert("content-type".into(), "application/json".into());
        Ok(Flow::Continue)
    }
}
