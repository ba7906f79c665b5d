//! `${VAR}` and `${VAR:-default}` interpolation of route and connector files.
//!
//! Interpolation runs on the file text before YAML parsing, so it works for any
//! value (ports, URLs, numbers). Values are never logged: only the variable name
//! appears in errors. `$${` writes a literal `${`. Comment lines are left alone so
//! a commented-out `${UNSET}` is not an error.

use std::path::Path;

use super::error::ConfigError;

/// Replace every `${…}` in `text`, looking variables up with `lookup`.
pub(super) fn interpolate(
    file: &Path,
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, Vec<ConfigError>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (line_no, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        let mut col = 1u64;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            col += rest[..pos].chars().count() as u64;
            let after = &rest[pos..];
            if let Some(tail) = after.strip_prefix("$${") {
                out.push_str("${");
                rest = tail;
                col += 3;
                continue;
            }
            let Some(inner_start) = after.strip_prefix("${") else {
                out.push('$');
                rest = &after[1..];
                col += 1;
                continue;
            };
            let Some(end) = inner_start.find('}') else {
                errors.push(ConfigError::new(
                    file,
                    line_no as u64 + 1,
                    col,
                    "unclosed `${` (write `$${` for a literal `${`)",
                ));
                out.push_str(after);
                rest = "";
                break;
            };
            let expr = &inner_start[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                errors.push(ConfigError::new(
                    file,
                    line_no as u64 + 1,
                    col,
                    format!("`${{{expr}}}` is not a valid variable reference (use ${{NAME}} or ${{NAME:-default}})"),
                ));
            } else {
                match (lookup(name), default) {
                    (Some(v), _) => out.push_str(&v),
                    (None, Some(d)) => out.push_str(d),
                    (None, None) => errors.push(
                        ConfigError::new(
                            file,
                            line_no as u64 + 1,
                            col,
                            format!("environment variable `{name}` is not set"),
                        )
                        .with_hint(format!("set it, or give a default: ${{{name}:-value}}")),
                    ),
                }
            }
            let consumed = 2 + end + 1;
            col += after[..consumed].chars().count() as u64;
            rest = &after[consumed..];
        }
        out.push_str(rest);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "HOST").then(|| "db.local".to_string())
    }

    #[test]
    fn replaces_set_and_defaulted_variables() {
        let out = interpolate(
            Path::new("c.yaml"),
            "url: http://${HOST}:${PORT:-8080}/x $${LIT}\n",
            env,
        )
        .unwrap();
        assert_eq!(out, "url: http://db.local:8080/x ${LIT}\n");
    }

    #[test]
    fn unset_variable_is_an_error_with_position() {
        let errs = interpolate(Path::new("c.yaml"), "a: 1\nurl: ${NOPE}\n", env).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!((errs[0].line, errs[0].column), (2, 6));
        assert!(errs[0].message.contains("`NOPE` is not set"));
    }

    #[test]
    fn comment_lines_are_not_interpolated() {
        let out = interpolate(Path::new("c.yaml"), "  # ${NOPE}\n", env).unwrap();
        assert_eq!(out, "  # ${NOPE}\n");
    }
}
