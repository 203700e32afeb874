//! Body capture for request records (opt-in per operation): the first bytes of a body, with
//! the named JSON fields redacted. A body that is not complete JSON is kept only when nothing
//! is to be redacted — otherwise a secret could pass unrecognised.

use crate::model::BodyCapture;

/// What the record keeps of a body of `total` bytes whose first bytes are `kept`.
pub(super) fn render(kept: &[u8], total: u64, settings: &BodyCapture) -> Option<String> {
    if total == 0 {
        return None;
    }
    let truncated = total > kept.len() as u64;
    if !settings.redact.is_empty() {
        let parsed = (!truncated)
            .then(|| serde_json::from_slice::<serde_json::Value>(kept).ok())
            .flatten();
        return Some(match parsed {
            Some(mut value) => {
                redact(&mut value, &settings.redact);
                value.to_string()
            }
            None => format!(
                "[not kept: {total} bytes that are not complete JSON, and fields must be redacted]"
            ),
        });
    }
    let text = String::from_utf8_lossy(kept);
    Some(if truncated {
        format!("{text}[… {total} bytes in all]")
    } else {
        text.into_owned()
    })
}

/// Replaces the value of every field named in `names` (any depth, case-insensitive).
fn redact(value: &mut serde_json::Value, names: &[String]) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if names.iter().any(|n| n.eq_ignore_ascii_case(key)) {
                    *v = serde_json::Value::String("[redacted]".into());
                } else {
                    redact(v, names);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| redact(v, names)),
        serde_json::Value::Null
        | serde_json::Value::Bool(_)
        | serde_json::Value::Number(_)
        | serde_json::Value::String(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_bytes: usize, redact: &[&str]) -> BodyCapture {
        BodyCapture {
            max_bytes,
            redact: redact.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn fields_are_redacted_at_any_depth() {
        let body = br#"{"user":"ann","Password":"hunter2","card":{"number":"4111","exp":"12/29"},"items":[{"token":"t"}]}"#;
        let out = render(
            body,
            body.len() as u64,
            &settings(4096, &["password", "number", "token"]),
        )
        .unwrap();
        assert!(
            !out.contains("hunter2") && !out.contains("4111") && !out.contains("\"t\""),
            "{out}"
        );
        assert!(
            out.contains("\"user\":\"ann\"") && out.contains("12/29"),
            "{out}"
        );
    }

    #[test]
    fn what_cannot_be_redacted_is_not_kept() {
        let body = br#"{"password":"hunter2","padding":"xxxxxxxxxxxxxxxx"}"#;
        // Truncated: not complete JSON.
        let out = render(&body[..20], body.len() as u64, &settings(20, &["password"])).unwrap();
        assert!(!out.contains("hunter2"), "{out}");
        assert!(out.starts_with("[not kept"), "{out}");
        let form = b"password=hunter2";
        let out = render(form, form.len() as u64, &settings(4096, &["password"])).unwrap();
        assert!(!out.contains("hunter2"), "{out}");
    }

    #[test]
    fn without_redaction_the_first_bytes_are_kept() {
        let out = render(b"hello", 5, &settings(4096, &[])).unwrap();
        assert_eq!(out, "hello");
        let out = render(b"hel", 5, &settings(3, &[])).unwrap();
        assert_eq!(out, "hel[… 5 bytes in all]");
        assert_eq!(render(b"", 0, &settings(3, &[])), None);
    }
}
