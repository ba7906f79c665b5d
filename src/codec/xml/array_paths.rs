//! "Force an array here" paths (the `arrays` option of `xml_to_json`): parsing the restricted
//! JSONPath and matching it against the names of the open elements.
//!
//! Invariant: a path that parses names elements only (no indexes, no wildcard names), and
//! matching is iterative, O(steps × depth) per path at worst, so a deep document cannot
//! overflow the stack. It knows nothing of the converter: it is given the element names from
//! the root down.

use super::chars::is_xml_name;

/// "Force an array here" paths: a restricted JSONPath over element names as they appear in the
/// JSON output, starting at the root element (`$.order.line`), with `..` for any depth
/// (`$..item`), `[*]` ignored (`$.a[*].b` is `$.a.b`) and `['name']` for names with dots.
#[derive(Debug, Clone, Default)]
pub struct ArrayPaths {
    patterns: Vec<Vec<Step>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// `..`: zero or more elements of any name.
    AnyDepth,
    Name(String),
}

impl ArrayPaths {
    /// Parses the paths; the error names the bad path and says why.
    pub fn parse(paths: &[String]) -> Result<ArrayPaths, String> {
        let patterns = paths
            .iter()
            .map(|p| parse_array_path(p).map_err(|why| format!("array path `{p}`: {why}")))
            .collect::<Result<_, _>>()?;
        Ok(ArrayPaths { patterns })
    }

    /// True when no path is set.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether an element must be an array; `name_at(0)` … `name_at(len - 1)` are the names
    /// from the root element down to the element itself.
    pub(super) fn matches<'n>(&self, len: usize, name_at: impl Fn(usize) -> &'n str) -> bool {
        self.patterns
            .iter()
            .any(|steps| path_matches(steps, len, &name_at))
    }
}

fn parse_array_path(path: &str) -> Result<Vec<Step>, String> {
    let rest = path
        .strip_prefix('$')
        .ok_or("must start with `$` (for example `$.order.line`)")?;
    let mut steps = Vec::new();
    let mut rest = rest;
    while !rest.is_empty() {
        let at = path.len() - rest.len() + 1;
        if let Some(after) = rest.strip_prefix("[*]") {
            rest = after;
            continue;
        }
        let deep = rest.starts_with("..");
        let after_dot = if deep {
            &rest[2..]
        } else if let Some(r) = rest.strip_prefix('.') {
            r
        } else if rest.starts_with('[') {
            rest
        } else {
            return Err(format!(
                "expected `.`, `..` or `[` at character {at}, found `{}`",
                rest.chars().next().unwrap_or(' ')
            ));
        };
        let (name, after) = if let Some(bracket) = after_dot.strip_prefix('[') {
            let quote = match bracket.chars().next() {
                Some(q @ ('\'' | '"')) => q,
                Some('*') => {
                    return Err(format!(
                        "`[*]` at character {at} must follow an element name"
                    ));
                }
                _ => {
                    return Err(format!(
                        "only `[*]` and quoted names like `['a.b']` are allowed in brackets \
                         (character {at}); a specific index cannot force an array"
                    ));
                }
            };
            let inner = &bracket[1..];
            let end = inner
                .find(quote)
                .ok_or(format!("unclosed quote in brackets at character {at}"))?;
            let after = inner[end + 1..].strip_prefix(']').ok_or(format!(
                "expected `]` after the quoted name at character {at}"
            ))?;
            (&inner[..end], after)
        } else {
            let end = after_dot.find(['.', '[']).unwrap_or(after_dot.len());
            (&after_dot[..end], &after_dot[end..])
        };
        if name.is_empty() {
            return Err(format!("expected an element name at character {at}"));
        }
        if name == "*" {
            return Err("wildcard names are not supported; use `..name`".to_owned());
        }
        if !is_xml_name(name) {
            return Err(format!("`{name}` is not a valid XML element name"));
        }
        if deep {
            steps.push(Step::AnyDepth);
        }
        steps.push(Step::Name(name.to_owned()));
        rest = after;
    }
    if steps.is_empty() {
        return Err("must name at least one element (for example `$.order.line`)".to_owned());
    }
    Ok(steps)
}

/// Wildcard matching where `AnyDepth` matches any run of names: the classic two-pointer
/// algorithm with backtracking to the last `AnyDepth`, O(steps × depth) at worst.
fn path_matches<'n>(steps: &[Step], len: usize, name_at: impl Fn(usize) -> &'n str) -> bool {
    let (mut si, mut ni) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ni < len {
        match steps.get(si) {
            Some(Step::Name(n)) if n == name_at(ni) => {
                si += 1;
                ni += 1;
            }
            Some(Step::AnyDepth) => {
                backtrack = Some((si, ni));
                si += 1;
            }
            _ => match backtrack {
                Some((bs, bn)) => {
                    backtrack = Some((bs, bn + 1));
                    si = bs + 1;
                    ni = bn + 1;
                }
                None => return false,
            },
        }
    }
    steps[si..].iter().all(|s| *s == Step::AnyDepth)
}
#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::XmlToJsonOptions;
    use super::super::test_support::convert_with;
    use super::ArrayPaths;

    fn arrays(paths: &[&str]) -> XmlToJsonOptions {
        XmlToJsonOptions {
            arrays: ArrayPaths::parse(&paths.iter().map(|p| p.to_string()).collect::<Vec<_>>())
                .expect("valid paths"),
            ..XmlToJsonOptions::default()
        }
    }

    #[test]
    fn forced_arrays_apply_to_single_elements_at_the_given_paths() {
        let xml = "<order><line><sku>1</sku></line><meta><item/></meta></order>";
        let v = convert_with(xml, &arrays(&["$.order.line", "$..item"]));
        assert_eq!(
            v,
            json!({"order": {"line": [{"sku": "1"}], "meta": {"item": [null]}}})
        );
        let v = convert_with("<order><line/></order>", &arrays(&["$.order[*].line"]));
        assert_eq!(v, json!({"order": {"line": [null]}}));
        let v = convert_with("<order><line/><line/></order>", &arrays(&["$.order.line"]));
        assert_eq!(v, json!({"order": {"line": [null, null]}}));
        // Paths are absolute: a deeper `line` is not forced.
        let v = convert_with("<order><x><line/></x></order>", &arrays(&["$.order.line"]));
        assert_eq!(v, json!({"order": {"x": {"line": null}}}));
    }

    #[test]
    fn any_depth_paths_match_at_every_level() {
        let xml = "<a><item/><b><c><item>x</item></c></b></a>";
        let v = convert_with(xml, &arrays(&["$..b..item"]));
        assert_eq!(v, json!({"a": {"item": null, "b": {"c": {"item": ["x"]}}}}));
    }

    #[test]
    fn bad_array_paths_are_reported_with_the_reason() {
        for (path, why) in [
            ("order.line", "must start with `$`"),
            ("$", "at least one element"),
            ("$.order.", "expected an element name"),
            ("$.order[0]", "specific index"),
            ("$.1abc", "not a valid XML element name"),
            ("$.a['b", "unclosed quote"),
        ] {
            let err = ArrayPaths::parse(&[path.to_owned()]).expect_err(path);
            assert!(err.contains(path) && err.contains(why), "{path}: {err}");
        }
        let ok = ArrayPaths::parse(&["$['a.b'].c".to_owned()]).expect("bracket names");
        assert!(!ok.is_empty());
        assert!(ArrayPaths::parse(&[]).expect("empty").is_empty());
    }
}
