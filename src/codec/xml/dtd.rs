//! Syntax check of a DOCTYPE declaration without interpreting it: the "no DTD processing"
//! policy.
//!
//! Invariant: nothing a DTD declares ever takes effect. Element and attribute-list
//! declarations are checked and ignored; entity declarations and parameter-entity references
//! are refused, so no entity is ever expanded (no billion laughs, no external entities).
//! Content-model groups recurse at most `MAX_GROUP_NESTING` deep.

use super::chars::{is_name_char, is_name_start_char, is_xml_space};
use super::text::{Problem, normalize_attr_value};

/// What is wrong in a DOCTYPE.
pub(super) enum DtdProblem {
    /// An entity declaration: refused by policy.
    Entity,
    Other(Problem),
}

fn dtd_error(at: usize, message: impl Into<String>) -> (usize, DtdProblem) {
    (at, DtdProblem::Other(Problem::Malformed(message.into())))
}

/// Syntax check of a DOCTYPE declaration (XML 1.0 §2.8, productions 28–83, plus the
/// Namespaces rule of no colons in notation and PI names) without interpreting it: element
/// and attribute-list declarations are checked and then ignored, entity declarations and
/// parameter-entity references are refused. `content` is what follows `<!DOCTYPE` up to the
/// closing `>`; errors carry a byte offset into it.
pub(super) fn check_doctype(content: &str) -> Result<(), (usize, DtdProblem)> {
    let mut c = DtdCursor { s: content, i: 0 };
    c.name("the DOCTYPE name")?;
    let had_space = c.space();
    if c.rest().starts_with("SYSTEM") || c.rest().starts_with("PUBLIC") {
        if !had_space {
            return Err(dtd_error(c.i, "whitespace required before the external ID"));
        }
        c.external_id(false)?;
        c.space();
    }
    if c.eat("[") {
        loop {
            c.space();
            if c.eat("]") {
                break;
            }
            c.markup_decl()?;
        }
        c.space();
    }
    if c.i != c.s.len() {
        return Err(dtd_error(
            c.i,
            "unexpected characters in the DOCTYPE declaration",
        ));
    }
    Ok(())
}

/// Cursor over DTD text. Content-model groups recurse, limited to `MAX_GROUP_NESTING`.
struct DtdCursor<'s> {
    s: &'s str,
    i: usize,
}

const MAX_GROUP_NESTING: usize = 64;

impl<'s> DtdCursor<'s> {
    fn rest(&self) -> &'s str {
        &self.s[self.i..]
    }

    fn eat(&mut self, token: &str) -> bool {
        let found = self.rest().starts_with(token);
        if found {
            self.i += token.len();
        }
        found
    }

    fn expect(&mut self, token: &str, what: &str) -> Result<(), (usize, DtdProblem)> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(dtd_error(self.i, format!("expected `{token}` {what}")))
        }
    }

    /// Skips whitespace; true if there was any.
    fn space(&mut self) -> bool {
        let rest = self.rest();
        let skipped = rest.len() - rest.trim_start_matches(is_xml_space).len();
        self.i += skipped;
        skipped > 0
    }

    fn require_space(&mut self, after: &str) -> Result<(), (usize, DtdProblem)> {
        if self.space() {
            Ok(())
        } else {
            Err(dtd_error(
                self.i,
                format!("whitespace required after {after}"),
            ))
        }
    }

    /// A run of name characters (a Name if `name_start`, else an Nmtoken).
    fn token(&mut self, what: &str, name_start: bool) -> Result<&'s str, (usize, DtdProblem)> {
        let rest = self.rest();
        let len = rest.find(|c: char| !is_name_char(c)).unwrap_or(rest.len());
        let token = &rest[..len];
        let ok = match token.chars().next() {
            Some(first) => !name_start || is_name_start_char(first),
            None => false,
        };
        if !ok {
            return Err(dtd_error(self.i, format!("expected {what}")));
        }
        self.i += len;
        Ok(token)
    }

    fn name(&mut self, what: &str) -> Result<&'s str, (usize, DtdProblem)> {
        self.token(what, true)
    }

    fn quoted(&mut self, what: &str) -> Result<&'s str, (usize, DtdProblem)> {
        let rest = self.rest();
        let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            return Err(dtd_error(self.i, format!("expected a quoted {what}")));
        };
        let Some(len) = rest[1..].find(quote) else {
            return Err(dtd_error(self.i, format!("unclosed {what}")));
        };
        let value = &rest[1..1 + len];
        self.i += len + 2;
        Ok(value)
    }

    /// `SYSTEM "uri"` or `PUBLIC "pubid" "uri"`; in a notation the system literal after a
    /// public ID is optional.
    fn external_id(&mut self, notation: bool) -> Result<(), (usize, DtdProblem)> {
        if self.eat("SYSTEM") {
            self.require_space("SYSTEM")?;
            self.quoted("system literal")?;
            return Ok(());
        }
        self.expect("PUBLIC", "or `SYSTEM`")?;
        self.require_space("PUBLIC")?;
        let at = self.i + 1;
        let pubid = self.quoted("public ID")?;
        if let Some(bad) = pubid
            .find(|c: char| !(c.is_ascii_alphanumeric() || " \r\n-'()+,./:=?;!*#@$_%".contains(c)))
        {
            return Err(dtd_error(at + bad, "character not allowed in a public ID"));
        }
        let spaced = self.space();
        if self.rest().starts_with(['"', '\'']) {
            if !spaced {
                return Err(dtd_error(
                    self.i,
                    "whitespace required before the system literal",
                ));
            }
            self.quoted("system literal")?;
        } else if !notation {
            return Err(dtd_error(
                self.i,
                "expected the system literal after the public ID",
            ));
        }
        Ok(())
    }

    fn markup_decl(&mut self) -> Result<(), (usize, DtdProblem)> {
        let start = self.i;
        if self.eat("<!--") {
            let rest = self.rest();
            let Some(end) = rest.find("--") else {
                return Err(dtd_error(start, "unclosed comment"));
            };
            if !rest[end..].starts_with("-->") {
                return Err(dtd_error(self.i + end, "`--` is not allowed in a comment"));
            }
            self.i += end + 3;
        } else if self.eat("<?") {
            let target = self.name("a processing instruction target")?;
            if target.eq_ignore_ascii_case("xml") || target.contains(':') {
                return Err(dtd_error(
                    start,
                    format!("invalid processing instruction target `{target}`"),
                ));
            }
            let Some(end) = self.rest().find("?>") else {
                return Err(dtd_error(start, "unclosed processing instruction"));
            };
            if end > 0 && !self.rest().starts_with(is_xml_space) {
                return Err(dtd_error(self.i, "whitespace required after the target"));
            }
            self.i += end + 2;
        } else if self.eat("<!ELEMENT") {
            self.require_space("`<!ELEMENT`")?;
            self.name("an element name")?;
            self.require_space("the element name")?;
            self.content_spec()?;
            self.space();
            self.expect(">", "to close `<!ELEMENT`")?;
        } else if self.eat("<!ATTLIST") {
            self.require_space("`<!ATTLIST`")?;
            self.name("an element name")?;
            self.attribute_defs()?;
        } else if self.rest().starts_with("<!ENTITY") {
            return Err((start, DtdProblem::Entity));
        } else if self.eat("<!NOTATION") {
            self.require_space("`<!NOTATION`")?;
            let name = self.name("a notation name")?;
            if name.contains(':') {
                return Err(dtd_error(start, "a notation name cannot contain a colon"));
            }
            self.require_space("the notation name")?;
            self.external_id(true)?;
            self.space();
            self.expect(">", "to close `<!NOTATION`")?;
        } else if self.eat("%") {
            let name = self.name("a parameter entity name")?;
            self.expect(";", "after the parameter entity name")?;
            return Err((
                start,
                DtdProblem::Other(Problem::Undeclared(format!("%{name};"))),
            ));
        } else {
            return Err(dtd_error(
                start,
                "expected a markup declaration, comment or processing instruction in the DTD",
            ));
        }
        Ok(())
    }

    fn content_spec(&mut self) -> Result<(), (usize, DtdProblem)> {
        if self.eat("EMPTY") || self.eat("ANY") {
            return Ok(());
        }
        self.expect("(", "or `EMPTY` or `ANY` for the content model")?;
        self.space();
        if self.eat("#PCDATA") {
            // Mixed content: (#PCDATA) or (#PCDATA | a | b)*
            let mut names = 0;
            loop {
                self.space();
                if self.eat(")") {
                    break;
                }
                self.expect("|", "or `)` in mixed content")?;
                self.space();
                self.name("an element name")?;
                names += 1;
            }
            if names > 0 {
                self.expect("*", "after mixed content with element names")?;
            } else {
                self.eat("*");
            }
            return Ok(());
        }
        self.group(0)
    }

    /// A choice or sequence after its `(`, then an optional quantifier.
    fn group(&mut self, nesting: usize) -> Result<(), (usize, DtdProblem)> {
        if nesting > MAX_GROUP_NESTING {
            return Err(dtd_error(self.i, "content model nested too deeply"));
        }
        let mut separator = None;
        loop {
            self.space();
            if self.eat("(") {
                self.group(nesting + 1)?;
            } else {
                self.name("an element name or `(`")?;
                self.quantifier();
            }
            self.space();
            if self.eat(")") {
                break;
            }
            let sep = if self.eat("|") {
                '|'
            } else if self.eat(",") {
                ','
            } else {
                return Err(dtd_error(
                    self.i,
                    "expected `|`, `,` or `)` in the content model",
                ));
            };
            if separator.is_some_and(|s| s != sep) {
                return Err(dtd_error(self.i - 1, "cannot mix `|` and `,` in one group"));
            }
            separator = Some(sep);
        }
        self.quantifier();
        Ok(())
    }

    fn quantifier(&mut self) {
        let _ = self.eat("?") || self.eat("*") || self.eat("+");
    }

    fn attribute_defs(&mut self) -> Result<(), (usize, DtdProblem)> {
        loop {
            let spaced = self.space();
            if self.eat(">") {
                return Ok(());
            }
            if !spaced {
                return Err(dtd_error(
                    self.i,
                    "whitespace required before an attribute definition",
                ));
            }
            self.name("an attribute name")?;
            self.require_space("the attribute name")?;
            if self.eat("(") {
                self.enumeration(false)?;
            } else {
                let at = self.i;
                let kind = self.name("an attribute type")?;
                match kind {
                    "CDATA" | "ID" | "IDREF" | "IDREFS" | "ENTITY" | "ENTITIES" | "NMTOKEN"
                    | "NMTOKENS" => {}
                    "NOTATION" => {
                        self.require_space("NOTATION")?;
                        self.expect("(", "after NOTATION")?;
                        self.enumeration(true)?;
                    }
                    _ => return Err(dtd_error(at, format!("unknown attribute type `{kind}`"))),
                }
            }
            self.require_space("the attribute type")?;
            if self.eat("#REQUIRED") || self.eat("#IMPLIED") {
                continue;
            }
            if self.eat("#FIXED") {
                self.require_space("#FIXED")?;
            }
            let at = self.i + 1;
            let value = self.quoted("default value")?;
            normalize_attr_value(value).map_err(|(i, p)| (at + i, DtdProblem::Other(p)))?;
        }
    }

    /// `( a | b | c )` after the `(`: names for NOTATION, name tokens otherwise.
    fn enumeration(&mut self, names: bool) -> Result<(), (usize, DtdProblem)> {
        loop {
            self.space();
            self.token("a name token", names)?;
            self.space();
            if self.eat(")") {
                return Ok(());
            }
            self.expect("|", "or `)` in the enumeration")?;
        }
    }
}
#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::test_support::convert;
    use super::super::{XmlToJsonOptions, xml_to_json};

    #[test]
    fn entity_declarations_are_refused_and_undeclared_entities_are_errors() {
        let bomb = br#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>
<lolz>&lol2;</lolz>"#;
        let err = xml_to_json(bomb, &XmlToJsonOptions::default()).expect_err("refused");
        assert!(err.is_dtd_policy());
        assert!(err.to_string().starts_with(
            "DTD entity declarations are refused (no DTD processing) at line 2, column 17"
        ));
        let err =
            xml_to_json(b"<a>&nbsp;</a>", &XmlToJsonOptions::default()).expect_err("undeclared");
        assert!(err.is_dtd_policy());
        assert!(err.to_string().starts_with("undeclared entity `&nbsp;`"));
        // A DOCTYPE without entity declarations is skipped.
        let v = convert("<!DOCTYPE a SYSTEM \"http://example.com/a.dtd\"><a>x</a>");
        assert_eq!(v, json!({"a": "x"}));
    }
}
