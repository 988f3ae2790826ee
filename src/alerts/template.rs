//! Declared actions' merge patches, filled from an alert: string values may hold
//! `{{ $labels.NAME }}` and `{{ $annotations.NAME }}` (spaces inside the braces optional). A
//! string that is only a placeholder becomes a JSON number or boolean when the alert's text is
//! one (`"{{ $labels.count }}"` with `count="3"` gives `3`). An unknown name or a `{{` that is
//! not a placeholder is an error. [`apply_merge_patch`] applies the result (RFC 7386).
use std::collections::BTreeMap;

use serde_json::Value;

/// A template that cannot be filled (HTTP 422 when an alert's, a refused declaration when the
/// spec's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("at {path}: the alert has no {kind} {name:?}")]
    Unknown {
        path: String,
        kind: &'static str,
        name: String,
    },
    #[error(
        "at {path}: {text:?} is not a placeholder: write {{{{ $labels.NAME }}}} or {{{{ $annotations.NAME }}}}"
    )]
    Malformed { path: String, text: String },
}

/// `patch` with every placeholder filled from the alert's labels and annotations.
pub fn render(
    patch: &Value,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Result<Value, TemplateError> {
    walk(patch, &mut String::new(), &|path, kind, name| {
        let map = match kind {
            Kind::Labels => labels,
            Kind::Annotations => annotations,
        };
        map.get(name)
            .cloned()
            .ok_or_else(|| TemplateError::Unknown {
                path: path.to_string(),
                kind: kind.singular(),
                name: name.to_string(),
            })
    })
}

/// `patch` with every placeholder filled with `1`: what a declaration is checked with (a
/// placeholder alone becomes the number 1).
pub fn render_with_ones(patch: &Value) -> Result<Value, TemplateError> {
    walk(patch, &mut String::new(), &|_, _, _| Ok("1".to_string()))
}

/// Applies a JSON merge patch (RFC 7386) to `target`.
pub fn apply_merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Labels,
    Annotations,
}

impl Kind {
    fn singular(self) -> &'static str {
        match self {
            Kind::Labels => "label",
            Kind::Annotations => "annotation",
        }
    }
}

type Fill<'f> = dyn Fn(&str, Kind, &str) -> Result<String, TemplateError> + 'f;

fn walk(value: &Value, path: &mut String, fill: &Fill<'_>) -> Result<Value, TemplateError> {
    Ok(match value {
        Value::String(s) => render_string(s, path_or_root(path), fill)?,
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("/{i}"));
                out.push(walk(item, path, fill)?);
                path.truncate(len);
            }
            Value::Array(out)
        }
        Value::Object(fields) => {
            let mut out = serde_json::Map::with_capacity(fields.len());
            for (key, item) in fields {
                let len = path.len();
                // JSON pointer escaping.
                path.push('/');
                path.push_str(&key.replace('~', "~0").replace('/', "~1"));
                out.insert(key.clone(), walk(item, path, fill)?);
                path.truncate(len);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

fn path_or_root(path: &str) -> &str {
    if path.is_empty() { "/" } else { path }
}

/// A piece of a template string.
enum Segment<'t> {
    Text(&'t str),
    Placeholder(Kind, &'t str),
}

/// The text and placeholders of `text`; a malformed placeholder is an error whatever the alert.
fn segments<'t>(text: &'t str, path: &str) -> Result<Vec<Segment<'t>>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            out.push(Segment::Text(&rest[..open]));
        }
        let after = &rest[open + 2..];
        let malformed = |t: &str| TemplateError::Malformed {
            path: path.to_string(),
            text: t.to_string(),
        };
        let Some(close) = after.find("}}") else {
            return Err(malformed(&rest[open..]));
        };
        let whole = &rest[open..open + 2 + close + 2];
        let inner = after[..close].trim();
        let (kind, name) = if let Some(name) = inner.strip_prefix("$labels.") {
            (Kind::Labels, name)
        } else if let Some(name) = inner.strip_prefix("$annotations.") {
            (Kind::Annotations, name)
        } else {
            return Err(malformed(whole));
        };
        let valid_name = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(malformed(whole));
        }
        out.push(Segment::Placeholder(kind, name));
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        out.push(Segment::Text(rest));
    }
    Ok(out)
}

fn render_string(text: &str, path: &str, fill: &Fill<'_>) -> Result<Value, TemplateError> {
    let segments = segments(text, path)?;
    let mut out = String::with_capacity(text.len());
    for segment in &segments {
        match segment {
            Segment::Text(t) => out.push_str(t),
            Segment::Placeholder(kind, name) => out.push_str(&fill(path, *kind, name)?),
        }
    }
    // Only a placeholder (blanks around it aside): typed by its text.
    let mut placeholders = segments
        .iter()
        .filter(|s| !matches!(s, Segment::Text(t) if t.trim().is_empty()));
    let lone = matches!(
        (placeholders.next(), placeholders.next()),
        (Some(Segment::Placeholder(..)), None)
    );
    if lone && let Ok(v @ (Value::Number(_) | Value::Bool(_))) = serde_json::from_str(out.trim()) {
        return Ok(v);
    }
    Ok(Value::String(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels() -> BTreeMap<String, String> {
        [
            ("broker_id", "2"),
            ("count", "3"),
            ("ratio", "0.5"),
            ("flag", "true"),
            ("group", "big"),
            ("padded", "007"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn annotations() -> BTreeMap<String, String> {
        [("retention", "604800000"), ("summary", "{{ $labels.x }}")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn r(patch: Value) -> Result<Value, TemplateError> {
        render(&patch, &labels(), &annotations())
    }

    #[test]
    fn placeholders_are_filled_in_strings_at_any_depth() {
        assert_eq!(
            r(json!({"brokerConfigGroups": {"{{$labels.group}}": {
                "config": {"log.retention.ms": "{{ $annotations.retention }}"},
                "note": "broker {{$labels.broker_id}} of {{   $labels.group   }}!"
            }}, "list": ["a-{{$labels.count}}", 1, null, true]}))
            .unwrap(),
            json!({"brokerConfigGroups": {"{{$labels.group}}": {
                "config": {"log.retention.ms": 604800000},
                "note": "broker 2 of big!"
            }}, "list": ["a-3", 1, null, true]})
        );
    }

    #[test]
    fn a_lone_placeholder_takes_the_type_of_its_text() {
        assert_eq!(r(json!("{{ $labels.count }}")).unwrap(), json!(3));
        assert_eq!(r(json!(" {{$labels.ratio}} ")).unwrap(), json!(0.5));
        assert_eq!(r(json!("{{$labels.flag}}")).unwrap(), json!(true));
        assert_eq!(r(json!("{{$labels.group}}")).unwrap(), json!("big"));
        // Not a JSON number: stays text.
        assert_eq!(r(json!("{{$labels.padded}}")).unwrap(), json!("007"));
        // Two placeholders, or text around one: text.
        assert_eq!(
            r(json!("{{$labels.count}}{{$labels.count}}")).unwrap(),
            json!("33")
        );
        assert_eq!(r(json!("x{{$labels.count}}")).unwrap(), json!("x3"));
    }

    #[test]
    fn filled_text_is_not_rendered_again() {
        assert_eq!(
            r(json!("{{ $annotations.summary }}")).unwrap(),
            json!("{{ $labels.x }}")
        );
    }

    #[test]
    fn unknown_names_are_errors_with_their_place() {
        assert_eq!(
            r(json!({"a": [0, {"b/c": "{{ $labels.nope }}"}]})).unwrap_err(),
            TemplateError::Unknown {
                path: "/a/1/b~1c".into(),
                kind: "label",
                name: "nope".into()
            }
        );
        let e = r(json!("{{$annotations.count}}")).unwrap_err();
        assert!(
            e.to_string()
                .contains("the alert has no annotation \"count\""),
            "{e}"
        );
    }

    #[test]
    fn malformed_placeholders_are_errors() {
        for bad in [
            "{{ $labels.count",
            "{{ labels.count }}",
            "{{ .Labels.count }}",
            "{{ $labels. }}",
            "{{ $labels.a-b }}",
            "{{ $values.x }}",
            "{{}}",
            "x {{",
        ] {
            assert!(
                matches!(r(json!(bad)), Err(TemplateError::Malformed { .. })),
                "{bad}"
            );
        }
        // A closing pair alone is text.
        assert_eq!(r(json!("a }} b")).unwrap(), json!("a }} b"));
    }

    #[test]
    fn with_ones_every_placeholder_is_one() {
        assert_eq!(
            render_with_ones(
                &json!({"n": "{{ $labels.anything }}", "s": "b-{{$annotations.y}}", "k": 5})
            )
            .unwrap(),
            json!({"n": 1, "s": "b-1", "k": 5})
        );
        assert!(render_with_ones(&json!({"bad": "{{ nope }}"})).is_err());
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        // The examples of RFC 7386 appendix A, a few of them.
        for (target, patch, result) in [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "foo"}), json!("bar"), json!("bar")),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!([1, 2]),
                json!({"a": "b", "c": null}),
                json!({"a": "b"}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ] {
            let mut t = target.clone();
            apply_merge_patch(&mut t, &patch);
            assert_eq!(t, result, "{target} + {patch}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_text_renders_or_fails_without_panicking(
            text in "(\\{\\{|\\}\\}| |\\$labels\\.|\\$annotations\\.|count|x|é|\\u{1F4A5})*"
        ) {
            let rendered = r(json!(text));
            let ones = render_with_ones(&json!(text));
            // The same placeholders are malformed either way.
            proptest::prop_assert_eq!(
                matches!(rendered, Err(TemplateError::Malformed { .. })),
                matches!(ones, Err(TemplateError::Malformed { .. }))
            );
            if !text.contains("{{") {
                proptest::prop_assert_eq!(rendered, Ok(json!(text)));
            }
        }
    }
}
