//! Env files (`.env`): read as docker-compose 1.29 reads them, for compose's `env_file:` and for
//! `spec.variablesFrom: [{file: ...}]`, and rewritten one variable at a time for key rotation.
//!
//! Not `dotenvy`: it expands `$VAR` inside unquoted and double-quoted values, so a password
//! with a `$` in it would arrive changed, and its rewrite would not keep the file's other lines.
//! Errors name the line, never its value.

/// Parses an env file as docker-compose 1.29 does (through python-dotenv): `KEY=value` lines,
/// `#` comments and blank lines skipped, an optional `export ` prefix, values in single quotes
/// taken literally, in double quotes with `\n`, `\t`, `\"` and `\\` escapes, unquoted ones
/// trimmed and cut at ` #`. A line with no `=` is a variable from the shell, which the operator
/// does not have: it is skipped. Unlike python-dotenv, `${VAR}` in a value is not expanded: a
/// password with a `$` in it arrives as written. A key set twice takes the later value.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    Ok(assignments(text)?
        .into_iter()
        .map(|a| (a.key, a.value))
        .collect())
}

/// One `KEY=value` line of an env file.
struct Assignment {
    /// Index of the line (0-based) in the file.
    line: usize,
    /// The line up to and including its `=` (indentation, `export `, the key), kept as written
    /// when the value is replaced.
    head_len: usize,
    key: String,
    value: String,
}

fn assignments(text: &str) -> Result<Vec<Assignment>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty() || key.chars().any(char::is_whitespace) {
            return Err(format!(
                "line {}: the variable name before `=` is empty or contains whitespace",
                n + 1
            ));
        }
        let value = unquote(value.trim())
            .ok_or_else(|| format!("line {}: a quoted value is not closed", n + 1))?;
        out.push(Assignment {
            line: n,
            head_len: raw.find('=').map_or(raw.len(), |i| i + 1),
            key: key.to_owned(),
            value,
        });
    }
    Ok(out)
}

fn unquote(v: &str) -> Option<String> {
    if let Some(rest) = v.strip_prefix('\'') {
        return rest.find('\'').map(|end| rest[..end].to_owned());
    }
    if let Some(rest) = v.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return Some(out),
                '\\' => match chars.next()? {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    other @ ('"' | '\\' | '\'') => out.push(other),
                    other => {
                        out.push('\\');
                        out.push(other);
                    }
                },
                c => out.push(c),
            }
        }
        return None;
    }
    let cut = v.find(" #").map_or(v, |i| &v[..i]);
    Some(cut.trim_end().to_owned())
}

/// The value `key` has in `text` (the last line setting it, which wins), if any.
pub fn get(text: &str, key: &str) -> Result<Option<String>, String> {
    Ok(assignments(text)?
        .into_iter()
        .rev()
        .find(|a| a.key == key)
        .map(|a| a.value))
}

/// `text` with `key` set to `value`. Only the line that gives `key` its value (the last one
/// setting it) changes: what precedes its `=` (indentation, `export `) is kept, the value is
/// written quoted as [`quote`] says, and a comment after the old value goes with it. Every other
/// line, comment and line ending stays as it was. A key the file lacks is appended.
pub fn set(text: &str, key: &str, value: &str) -> Result<String, String> {
    let bom = if text.starts_with('\u{feff}') {
        "\u{feff}"
    } else {
        ""
    };
    let body = &text[bom.len()..];
    let Some(target) = assignments(text)?.into_iter().rev().find(|a| a.key == key) else {
        let sep = if body.is_empty() || body.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        return Ok(format!("{text}{sep}{key}={}\n", quote(value)));
    };
    let mut out = String::from(bom);
    for (n, line) in body.split_inclusive('\n').enumerate() {
        if n != target.line {
            out.push_str(line);
            continue;
        }
        let ending = if line.ends_with("\r\n") {
            "\r\n"
        } else if line.ends_with('\n') {
            "\n"
        } else {
            ""
        };
        out.push_str(&line[..target.head_len]);
        out.push_str(&quote(value));
        out.push_str(ending);
    }
    Ok(out)
}

/// A value as [`parse`] (and docker-compose) reads it back unchanged: bare when it is only
/// letters, digits and punctuation that no reader treats specially; in single quotes (taken
/// literally, and never `$`-expanded by docker-compose) when it holds no `'`, `\` or line break;
/// otherwise in double quotes with `\`, `"` and line breaks escaped.
pub fn quote(value: &str) -> String {
    let bare = |c: char| c.is_ascii_alphanumeric() || "_-.,:/@%+=^~".contains(c);
    if value.chars().all(bare) {
        return value.to_owned();
    }
    if !value.contains(['\'', '\\', '\n', '\r']) {
        return format!("'{value}'");
    }
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn env_files_read_like_docker_compose_reads_them() {
        let text = "\u{feff}# comment\n\nA=1\nexport B = two \nC='x y # z'\nD=\"l1\\nl2 \\\"q\\\"\"\nE=plain # trailing\nFROM_SHELL\nF=\nG=a=b\n";
        let vars: BTreeMap<_, _> = parse(text).unwrap().into_iter().collect();
        assert_eq!(vars["A"], "1");
        assert_eq!(vars["B"], "two");
        assert_eq!(vars["C"], "x y # z");
        assert_eq!(vars["D"], "l1\nl2 \"q\"");
        assert_eq!(vars["E"], "plain");
        assert_eq!(vars["F"], "");
        assert_eq!(vars["G"], "a=b");
        assert!(!vars.contains_key("FROM_SHELL"));
    }

    #[test]
    fn a_broken_env_file_line_is_named_without_its_value() {
        let err = parse("OK=1\nPW=\"s3cret-unclosed\n").unwrap_err();
        assert!(err.contains("line 2") && !err.contains("s3cret"), "{err}");
        let err = parse("BAD KEY=s3cret").unwrap_err();
        assert!(err.contains("line 1") && !err.contains("s3cret"), "{err}");
    }

    #[test]
    fn every_value_is_read_back_as_it_was_written() {
        let values = [
            "",
            "plain",
            "with space",
            " leading and trailing ",
            "dollar $HOME ${X}",
            "hash # inside",
            "#start",
            "single ' quote",
            "double \" quote",
            "back\\slash",
            "both ' and \" and \\",
            "line\nbreak\r\ttab",
            "=start",
            "ünïcode ✓",
        ];
        for v in values {
            let text = set("", "K", v).unwrap();
            assert_eq!(get(&text, "K").unwrap().as_deref(), Some(v), "{text:?}");
        }
    }

    #[test]
    fn setting_a_key_changes_only_the_line_that_gives_its_value() {
        let text =
            "\u{feff}# db\r\nPW=old # note\r\nexport  TOKEN = 'a b'\nPW=newer\n\n# end\nOTHER=1";
        let out = set(text, "PW", "n3w pw").unwrap();
        assert_eq!(
            out,
            "\u{feff}# db\r\nPW=old # note\r\nexport  TOKEN = 'a b'\nPW='n3w pw'\n\n# end\nOTHER=1"
        );
        let out = set(text, "TOKEN", "t").unwrap();
        assert!(out.contains("\nexport  TOKEN =t\n"), "{out:?}");
        assert_eq!(get(&out, "TOKEN").unwrap().as_deref(), Some("t"));
    }

    #[test]
    fn a_key_the_file_lacks_is_appended_after_a_line_break() {
        assert_eq!(set("A=1", "B", "2").unwrap(), "A=1\nB=2\n");
        assert_eq!(set("A=1\n", "B", "2").unwrap(), "A=1\nB=2\n");
        assert_eq!(set("", "B", "2").unwrap(), "B=2\n");
    }

    #[test]
    fn a_file_that_does_not_parse_is_not_rewritten() {
        let err = set("PW=\"s3cret-unclosed\n", "PW", "x").unwrap_err();
        assert!(err.contains("line 1") && !err.contains("s3cret"), "{err}");
    }
}
