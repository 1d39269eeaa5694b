//! `${VAR}` substitution in SQL text.

use std::collections::BTreeMap;

/// Replaces every `${NAME}` in `text` with its value; `$${` writes a literal `${`.
///
/// Returns the first unknown variable's name as the error, so the caller can say where it is.
pub fn substitute_vars(text: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        if let Some(escaped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = escaped;
        } else if let Some(body) = after.strip_prefix("${") {
            let Some(end) = body.find('}') else {
                // An unterminated `${` is left as written: SQL may legitimately contain it in a
                // string literal, and DataFusion will report it if it is a syntax error.
                out.push_str(after);
                return Ok(out);
            };
            let name = body[..end].trim();
            match vars.get(name) {
                Some(value) => out.push_str(value),
                None => return Err(name.to_string()),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        [("d".to_string(), "2026-01-01".to_string())].into()
    }

    #[test]
    fn replaces_known() {
        assert_eq!(
            substitute_vars("a ${d} b ${ d }", &vars()).unwrap(),
            "a 2026-01-01 b 2026-01-01"
        );
    }

    #[test]
    fn unknown_is_error() {
        assert_eq!(substitute_vars("${x}", &vars()).unwrap_err(), "x");
    }

    #[test]
    fn escapes_and_plain_dollars() {
        assert_eq!(substitute_vars("$${d} $1 $", &vars()).unwrap(), "${d} $1 $");
    }
}
