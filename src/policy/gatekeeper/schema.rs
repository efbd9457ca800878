//! Checking a constraint's `spec.parameters` against its template's `openAPIV3Schema`, as
//! the API server checks a custom resource: types, `enum`, `required`, `items`,
//! `properties` and `additionalProperties`. Fields the schema does not name are allowed
//! (the API server prunes them; Gatekeeper's v1beta1 schemas keep them).

use serde_json::Value;

/// Every way `value` (at `path`) does not fit `schema`.
pub fn check(value: &Value, schema: &Value, path: &str, out: &mut Vec<String>) {
    if value.is_null() && schema["nullable"] == true {
        return;
    }
    if let Some(wanted) = schema["type"].as_str() {
        let fits = match wanted {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            _ => true,
        };
        if !fits {
            out.push(format!(
                "{path}: must be of type {wanted}, not {}",
                type_of(value)
            ));
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            out.push(format!(
                "{path}: {value} is not one of {}",
                Value::from(allowed.clone())
            ));
        }
    }
    match value {
        Value::Object(fields) => {
            for name in schema["required"].as_array().into_iter().flatten() {
                if let Some(name) = name.as_str() {
                    if !fields.contains_key(name) {
                        out.push(format!("{path}.{name}: required"));
                    }
                }
            }
            let properties = schema["properties"].as_object();
            for (name, field) in fields {
                let at = format!("{path}.{name}");
                match properties.and_then(|p| p.get(name)) {
                    Some(inner) => check(field, inner, &at, out),
                    None => match &schema["additionalProperties"] {
                        Value::Object(_) => check(field, &schema["additionalProperties"], &at, out),
                        Value::Bool(false) if properties.is_some() => {
                            out.push(format!("{at}: not allowed by the schema"))
                        }
                        _ => {}
                    },
                }
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for (i, item) in items.iter().enumerate() {
                check(item, &schema["items"], &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parameters_are_checked_like_a_custom_resource() {
        let schema = json!({"type": "object", "properties": {
            "labels": {"type": "array", "items": {"type": "object", "properties": {
                "key": {"type": "string"}, "allowedRegex": {"type": "string"}}}},
            "mode": {"type": "string", "enum": ["a", "b"]},
            "max": {"type": "integer"}}});
        let errors = |value: Value| {
            let mut out = Vec::new();
            check(&value, &schema, "spec.parameters", &mut out);
            out
        };
        assert!(
            errors(json!({"labels": [{"key": "owner"}], "mode": "a", "max": 3, "other": 1}))
                .is_empty()
        );
        assert_eq!(
            errors(json!({"labels": [{"key": 1}], "mode": "c", "max": 1.5})),
            [
                "spec.parameters.labels[0].key: must be of type string, not integer",
                "spec.parameters.max: must be of type integer, not number",
                "spec.parameters.mode: \"c\" is not one of [\"a\",\"b\"]",
            ]
        );
        assert_eq!(
            errors(json!("x")),
            ["spec.parameters: must be of type object, not string"]
        );
    }
}
