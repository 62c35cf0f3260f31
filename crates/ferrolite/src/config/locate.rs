//! Where an error is: the line and column of a path in the YAML ([`locate`], for errors found
//! after parsing), and the parser's own errors in words ([`parse_error`]): what was expected,
//! the value found — never the value of a field that holds a secret.

use super::ConfigError;

/// A collection [`locate`] is walking: a mapping (with the path of the key whose value comes
/// next) or a sequence (with the next item's index).
enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

/// A node begins at `at`: records a key (`scalar`, where a key is due) or a sequence item, and
/// gives the node's path when it is a value (or the document).
fn begin(
    stack: &mut [Frame],
    places: &mut Vec<(String, u64, u64)>,
    scalar: Option<&str>,
    at: (u64, u64),
) -> Option<String> {
    let Some(frame) = stack.last_mut() else {
        return Some(String::new());
    };
    match frame {
        Frame::Map { path, key } => match key.take() {
            Some(value_path) => Some(value_path),
            None => {
                let name = scalar.unwrap_or("?");
                let child = if path.is_empty() {
                    name.to_string()
                } else {
                    format!("{path}.{name}")
                };
                places.push((child.clone(), at.0, at.1));
                *key = Some(child);
                None
            }
        },
        Frame::Seq { path, index } => {
            let item = format!("{path}[{index}]");
            *index += 1;
            places.push((item.clone(), at.0, at.1));
            Some(item)
        }
    }
}

/// The line and column (from 1) of the key (or sequence item) at `path` in the YAML `text`, as
/// this module writes paths (`model_list[3].litellm_params.rpm`). A path that skips a list
/// index (`router_settings.fallbacks.g` for `fallbacks: [{g: [...]}]`) matches when exactly one
/// place does; otherwise the nearest enclosing key that can be found.
pub(super) fn locate(text: &str, path: &str) -> Option<(u64, u64)> {
    use serde_saphyr::granit_parser::{Event, Parser};
    let mut places: Vec<(String, u64, u64)> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    for item in Parser::new_from_str(text) {
        let Ok((event, span)) = item else { break };
        let at = (span.start.line() as u64, span.start.col() as u64 + 1);
        match event {
            Event::Scalar(value, ..) => {
                begin(&mut stack, &mut places, Some(&value), at);
            }
            Event::Alias(_) => {
                begin(&mut stack, &mut places, None, at);
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                // A collection as a value (or the document): walked under its path.
                if let Some(path) = begin(&mut stack, &mut places, None, at) {
                    stack.push(match event {
                        Event::MappingStart(..) => Frame::Map { path, key: None },
                        _ => Frame::Seq { path, index: 0 },
                    });
                } else {
                    // A collection used as a key: walked, but its paths mean nothing.
                    stack.push(Frame::Seq {
                        path: String::from("?"),
                        index: 0,
                    });
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
            }
            _ => {}
        }
    }
    let without_indices = |p: &str| {
        let mut out = String::with_capacity(p.len());
        let mut skipping = false;
        for c in p.chars() {
            match c {
                '[' => skipping = true,
                ']' => skipping = false,
                c if !skipping => out.push(c),
                _ => {}
            }
        }
        out
    };
    let mut wanted = path.to_string();
    loop {
        if let Some((_, line, column)) = places.iter().find(|(p, ..)| *p == wanted) {
            return Some((*line, *column));
        }
        let loose = without_indices(&wanted);
        let item = wanted.ends_with(']');
        let mut matches = places
            .iter()
            .filter(|(p, ..)| p.ends_with(']') == item && without_indices(p) == loose);
        if let (Some((_, line, column)), None) = (matches.next(), matches.next()) {
            return Some((*line, *column));
        }
        // The nearest enclosing key or item.
        let cut = wanted.rfind(['.', '['])?;
        wanted.truncate(cut);
    }
}

/// A parser error as a [`ConfigError`]: the path the deserializer was at, a message that names
/// what was expected and the value found, and the position.
pub(super) fn parse_error(text: &str, path: &str, error: &serde_saphyr::Error) -> ConfigError {
    let location = error.location();
    let (line, column) = match location {
        Some(l) if l.line() > 0 => (Some(l.line()), Some(l.column())),
        _ => (None, None),
    };
    let raw = error.to_string();
    // "error: line 5 column 12: invalid u64" -> "invalid u64"
    let message = match raw.split_once(": ") {
        Some((head, rest)) if head.starts_with("error") => match rest.split_once(": ") {
            Some((pos, rest)) if pos.starts_with("line ") => rest.to_string(),
            _ => rest.to_string(),
        },
        _ => raw.clone(),
    };
    let mut message = message
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    // Serde's own messages end with the position, which the error shows once already.
    if let Some(at) = message.rfind(" at line ") {
        if message[at..].contains(", column ") {
            message.truncate(at);
        }
    }
    let mut path = path
        .trim_start_matches('.')
        .trim_end_matches(".?")
        .to_string();
    let secret = is_secret(&path);
    let got = || {
        line.zip(column)
            .and_then(|(l, c)| scalar_at(text, l, c))
            .map_or_else(|| "nothing".to_string(), |token| show(&token, secret))
    };
    let message = if let Some(key) = message.strip_prefix("duplicate mapping key: ") {
        let key = key.split(',').next().unwrap_or(key);
        format!("the key `{key}` appears twice")
    } else if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|m| m.strip_suffix('`'))
    {
        if !path.is_empty() && path != "?" {
            path.push('.');
        } else {
            path.clear();
        }
        path.push_str(field);
        "required".to_string()
    } else if let Some(expected) = expected_of(&message) {
        format!("expected {expected}, got {}", got())
    } else {
        message
    };
    ConfigError::Invalid {
        path: if path == "?" { String::new() } else { path },
        message,
        line,
        column,
    }
}

/// What a parser message says was expected, in words.
fn expected_of(message: &str) -> Option<&'static str> {
    let lower = message.to_ascii_lowercase();
    Some(if lower.starts_with("invalid u8") {
        "an integer from 0 to 255"
    } else if lower.starts_with("invalid u16") {
        "an integer from 0 to 65535"
    } else if ["invalid u64", "invalid u32", "invalid usize"]
        .iter()
        .any(|m| lower.starts_with(m))
    {
        "a non-negative integer"
    } else if lower.starts_with("invalid i64") || lower.starts_with("invalid i32") {
        "an integer"
    } else if lower.starts_with("invalid floating point") || lower.contains("expected f64") {
        "a number"
    } else if lower.contains("invalid bool") || lower.contains("expected a boolean") {
        "true or false"
    } else if lower.contains("sequence start") || lower.contains("expected a sequence") {
        "a list"
    } else if lower.contains("mapping start") || lower.contains("expected a map") {
        "a mapping"
    } else if lower.contains("expected a string") || lower.contains("expected string") {
        "a string"
    } else {
        return None;
    })
}

/// The fields that hold secrets (`SecretValue`): an error about one names the field and the
/// expected type, never the value.
fn is_secret(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path);
    let in_headers = path
        .split('.')
        .rev()
        .skip(1)
        .any(|part| part == "extra_headers" || part == "headers");
    in_headers
        || matches!(
            last,
            "api_key"
                | "master_key"
                | "redis_url"
                | "url"
                | "password"
                | "redis_password"
                | "aws_access_key_id"
                | "aws_secret_access_key"
                | "aws_session_token"
                | "aws_region_name"
                | "vertex_project"
                | "vertex_location"
                | "vertex_credentials"
        )
        || (last == "key" && path.contains("api_keys["))
}

/// The scalar (or the start of the node) at a 1-based line and column, cut where the scalar
/// ends: at a comment, and inside a flow collection (`{...}`, `[...]`) at the next `,`, `]` or
/// `}`, so that it never runs on into the next fields.
fn scalar_at(text: &str, line: u64, column: u64) -> Option<String> {
    let line = text
        .lines()
        .nth(usize::try_from(line.checked_sub(1)?).ok()?)?;
    let start = usize::try_from(column.checked_sub(1)?).ok()?;
    let before: String = line.chars().take(start).collect();
    let rest: String = line.chars().skip(start).collect();
    let mut rest = match rest.find(" #") {
        Some(comment) => &rest[..comment],
        None => rest.as_str(),
    };
    let in_flow = before.contains(['{', '[']);
    let quoted = rest.starts_with(['"', '\'']);
    if in_flow && !quoted && !rest.starts_with(['{', '[']) {
        if let Some(end) = rest.find([',', ']', '}']) {
            rest = &rest[..end];
        }
    }
    let token = rest.trim();
    (!token.is_empty()).then(|| token.to_string())
}

/// A token as the message shows it: a collection by its kind (never its text: it runs on into
/// the fields it holds), numbers as they are, other text quoted; the value of a `secret` field
/// never.
fn show(token: &str, secret: bool) -> String {
    let plain = !token.starts_with(['"', '\'']);
    if token.starts_with('{') {
        return "a mapping".to_string();
    }
    if token.starts_with('[') || token == "-" || token.starts_with("- ") {
        return "a list".to_string();
    }
    if plain && (token.ends_with(':') || token.contains(": ")) {
        return "a mapping".to_string();
    }
    if secret {
        return "a value of another type (not shown: the field holds a secret)".to_string();
    }
    if token.parse::<f64>().is_ok() {
        return token.to_string();
    }
    let unquoted = token
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .or_else(|| token.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')))
        .unwrap_or(token);
    format!("{unquoted:?}")
}

#[cfg(test)]
mod tests {
    /// Every field declared as a `SecretValue` is one `is_secret` knows, so that an error about
    /// a new secret field never shows its value (a guard on the list, which goes by path).
    #[test]
    fn every_secret_value_field_is_known_as_a_secret() {
        let mut found = Vec::new();
        for line in include_str!("raw.rs").lines() {
            let line = line.trim();
            let line = line.strip_prefix("pub(super) ").unwrap_or(line);
            let Some((name, ty)) = line.split_once(':') else {
                continue;
            };
            if !ty.contains("SecretValue") || name.contains([' ', '(', '/']) {
                continue;
            }
            let path = if ty.contains("BTreeMap") {
                format!("model_list[0].litellm_params.{name}.X-Header")
            } else if name == "key" {
                format!("ferrolite_settings.api_keys[0].{name}")
            } else {
                format!("section.{name}")
            };
            assert!(super::is_secret(&path), "{path} is not known as a secret");
            found.push(name.to_string());
        }
        assert!(found.len() >= 9, "{found:?}");
        assert!(super::is_secret("litellm_settings.cache_params.url"));
        assert!(super::is_secret(
            "model_list[0].litellm_params.vertex_credentials"
        ));
        assert!(!super::is_secret("model_list[0].litellm_params.rpm"));
    }
}
