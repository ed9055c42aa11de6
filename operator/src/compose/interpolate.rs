//! Compose variable interpolation: `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
//! `${VAR:?error}`, `${VAR?error}`, `${VAR:+replacement}`, `${VAR+replacement}` and `$$`.
//!
//! compose_spec deserializes but does not interpolate, and no maintained crate implements the
//! compose rules (the `?` forms, `$$`, defaults that themselves interpolate), so this small
//! module does, over every string scalar of the parsed YAML (as docker-compose does: keys and
//! non-string values are left alone).

use std::collections::BTreeMap;

use yaml_serde::Value;

/// Why a string could not be interpolated. Never carries a variable's value: it may be a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolationError {
    #[error("variable ${{{name}}} has no value and no default; add it to spec.variables")]
    Missing { name: String },
    #[error("variable ${{{name}}} is required: {message}")]
    Required { name: String, message: String },
    #[error("invalid interpolation `{text}`: {why}")]
    Syntax { text: String, why: &'static str },
}

/// Interpolates every string scalar below `value`.
pub fn interpolate_value(
    value: &mut Value,
    vars: &BTreeMap<String, String>,
) -> Result<(), InterpolationError> {
    match value {
        Value::String(s) => {
            *s = interpolate(s, vars)?;
        }
        Value::Sequence(items) => {
            for item in items {
                interpolate_value(item, vars)?;
            }
        }
        Value::Mapping(map) => {
            for (_, v) in map.iter_mut() {
                interpolate_value(v, vars)?;
            }
        }
        Value::Tagged(tagged) => interpolate_value(&mut tagged.value, vars)?,
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

/// Interpolates one string.
pub fn interpolate(
    input: &str,
    vars: &BTreeMap<String, String>,
) -> Result<String, InterpolationError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body_start) = after.strip_prefix('{') {
            let end = matching_brace(body_start).ok_or_else(|| InterpolationError::Syntax {
                text: truncate(&rest[pos..]),
                why: "missing closing brace",
            })?;
            out.push_str(&expand_braced(&body_start[..end], vars)?);
            rest = &body_start[end + 1..];
        } else {
            let len = name_len(after);
            if len == 0 {
                // A lone `$` (e.g. at the end, or before a space) is kept, as docker-compose does.
                out.push('$');
                rest = after;
            } else {
                let name = &after[..len];
                out.push_str(lookup(name, vars)?);
                rest = &after[len..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn expand_braced(
    body: &str,
    vars: &BTreeMap<String, String>,
) -> Result<String, InterpolationError> {
    let len = name_len(body);
    if len == 0 {
        return Err(InterpolationError::Syntax {
            text: format!("${{{}}}", truncate(body)),
            why: "expected a variable name",
        });
    }
    let (name, op) = body.split_at(len);
    let value = vars.get(name);
    let set_non_empty = value.is_some_and(|v| !v.is_empty());
    let (operator, arg) = match op {
        "" => return lookup(name, vars).map(str::to_owned),
        _ if op.starts_with(":-") || op.starts_with(":?") || op.starts_with(":+") => op.split_at(2),
        _ if op.starts_with('-') || op.starts_with('?') || op.starts_with('+') => op.split_at(1),
        _ => {
            return Err(InterpolationError::Syntax {
                text: format!("${{{}}}", truncate(body)),
                why: "expected one of :- - :? ? :+ + after the name",
            })
        }
    };
    // The argument may itself hold variables, e.g. `${A:-${B}}`.
    let arg = || interpolate(arg, vars);
    match operator {
        ":-" if set_non_empty => Ok(value.cloned().unwrap_or_default()),
        ":-" => arg(),
        "-" => value.cloned().map_or_else(arg, Ok),
        ":?" if set_non_empty => Ok(value.cloned().unwrap_or_default()),
        "?" if value.is_some() => Ok(value.cloned().unwrap_or_default()),
        ":?" | "?" => Err(InterpolationError::Required {
            name: name.to_owned(),
            message: arg()?,
        }),
        ":+" if set_non_empty => arg(),
        "+" if value.is_some() => arg(),
        _ => Ok(String::new()),
    }
}

fn lookup<'a>(
    name: &str,
    vars: &'a BTreeMap<String, String>,
) -> Result<&'a str, InterpolationError> {
    vars.get(name)
        .map(String::as_str)
        .ok_or_else(|| InterpolationError::Missing {
            name: name.to_owned(),
        })
}

/// Length of the variable name at the start of `s` (`[A-Za-z_][A-Za-z0-9_]*`).
fn name_len(s: &str) -> usize {
    let mut chars = s.char_indices();
    match chars.next() {
        Some((_, c)) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return 0,
    }
    chars
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
        .map_or(s.len(), |(i, _)| i)
}

/// Index of the `}` closing a `${`, allowing nested `${...}` in defaults.
fn matching_brace(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        [("USER", "erni"), ("EMPTY", ""), ("PORT", "8000")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn ok(s: &str) -> String {
        interpolate(s, &vars()).unwrap()
    }

    #[test]
    fn plain_and_braced() {
        assert_eq!(
            ok("postgres://$USER@db:${PORT}/x"),
            "postgres://erni@db:8000/x"
        );
        assert_eq!(ok("no vars"), "no vars");
        assert_eq!(ok("cost: $$5 and $"), "cost: $5 and $");
        assert_eq!(ok("$$USER"), "$USER");
    }

    #[test]
    fn defaults_distinguish_unset_from_empty() {
        assert_eq!(ok("${NOPE:-d}"), "d");
        assert_eq!(ok("${NOPE-d}"), "d");
        assert_eq!(ok("${EMPTY:-d}"), "d");
        assert_eq!(ok("${EMPTY-d}"), "");
        assert_eq!(ok("${USER:-d}"), "erni");
        assert_eq!(ok("${NOPE:-${USER}}"), "erni");
        assert_eq!(ok("${NOPE:-}"), "");
    }

    #[test]
    fn replacement_forms() {
        assert_eq!(ok("${USER:+set}"), "set");
        assert_eq!(ok("${EMPTY:+set}"), "");
        assert_eq!(ok("${EMPTY+set}"), "set");
        assert_eq!(ok("${NOPE+set}"), "");
    }

    #[test]
    fn errors_name_the_variable_not_a_value() {
        let v = vars();
        assert_eq!(
            interpolate("${NOPE}", &v),
            Err(InterpolationError::Missing {
                name: "NOPE".into()
            })
        );
        assert_eq!(
            interpolate("$NOPE", &v),
            Err(InterpolationError::Missing {
                name: "NOPE".into()
            })
        );
        assert_eq!(
            interpolate("${EMPTY:?must be set}", &v),
            Err(InterpolationError::Required {
                name: "EMPTY".into(),
                message: "must be set".into()
            })
        );
        assert_eq!(interpolate("${EMPTY?x}", &v).unwrap(), "");
        assert!(matches!(
            interpolate("${USER", &v),
            Err(InterpolationError::Syntax { .. })
        ));
        assert!(matches!(
            interpolate("${}", &v),
            Err(InterpolationError::Syntax { .. })
        ));
        assert!(matches!(
            interpolate("${USER!x}", &v),
            Err(InterpolationError::Syntax { .. })
        ));
    }

    #[test]
    fn walks_yaml_strings_only() {
        let mut doc: Value =
            yaml_serde::from_str("a: [\"$USER\", 5, true]\nb: {c: \"${PORT}\"}\n$USER: k").unwrap();
        interpolate_value(&mut doc, &vars()).unwrap();
        assert_eq!(doc["a"][0], Value::from("erni"));
        assert_eq!(doc["b"]["c"], Value::from("8000"));
        assert!(doc.get("$USER").is_some(), "keys are not interpolated");
    }
}
