//! The merged OpenAPI document (`/openapi.json`) and its Swagger UI (`/docs`).
//!
//! The host's own poem-openapi document is the base; each loaded plugin's
//! document is merged into it. A path or a differing schema with a name
//! already taken refuses that plugin rather than silently shadowing a route.

use serde_json::{Map, Value};

/// Why a plugin's OpenAPI document cannot join the merged one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MergeError {
    /// The path is already served by the host or another plugin.
    #[error("path `{0}` is already served")]
    PathTaken(String),
    /// A component of that name exists with another definition.
    #[error("component `{section}/{name}` is already defined differently")]
    ComponentTaken {
        /// `schemas`, `responses`, ...
        section: String,
        /// The component's name.
        name: String,
    },
    /// The document, or one of its sections, is not a JSON object.
    #[error("`{0}` is not an object")]
    NotAnObject(String),
}

/// Why the Swagger UI page could not be built.
#[derive(Debug, thiserror::Error)]
#[error("the Swagger UI page does not embed the expected document")]
pub(crate) struct SwaggerPageError;

/// Merges `plugin` into `base`. On a collision nothing is changed and the
/// error names what collided.
pub(crate) fn merge(base: &mut Value, plugin: &Value) -> Result<(), MergeError> {
    let mut merged = base.clone();
    merge_map(&mut merged, plugin, "paths", |name, _, _| {
        Err(MergeError::PathTaken(name.to_owned()))
    })?;
    for section in [
        "schemas",
        "responses",
        "parameters",
        "requestBodies",
        "headers",
        "securitySchemes",
    ] {
        let Some(incoming) = plugin.pointer(&format!("/components/{section}")) else {
            continue;
        };
        let target = merged
            .as_object_mut()
            .ok_or_else(|| MergeError::NotAnObject("the base document".into()))?
            .entry("components")
            .or_insert_with(|| Value::Object(Map::new()));
        let wrapper = serde_json::json!({ section: incoming });
        merge_map(target, &wrapper, section, |name, old, new| {
            if old == new {
                Ok(())
            } else {
                Err(MergeError::ComponentTaken {
                    section: section.to_owned(),
                    name: name.to_owned(),
                })
            }
        })?;
    }
    merge_tags(&mut merged, plugin);
    *base = merged;
    Ok(())
}

fn merge_map(
    target: &mut Value,
    source: &Value,
    key: &str,
    on_collision: impl Fn(&str, &Value, &Value) -> Result<(), MergeError>,
) -> Result<(), MergeError> {
    let Some(incoming) = source.get(key).and_then(Value::as_object) else {
        return Ok(());
    };
    let map = target
        .as_object_mut()
        .ok_or_else(|| MergeError::NotAnObject("the document".into()))?
        .entry(key)
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or_else(|| MergeError::NotAnObject(key.to_owned()))?;
    for (name, value) in incoming {
        match map.get(name) {
            Some(existing) => on_collision(name, existing, value)?,
            None => {
                map.insert(name.clone(), value.clone());
            }
        }
    }
    Ok(())
}

fn merge_tags(target: &mut Value, source: &Value) {
    let Some(incoming) = source.get("tags").and_then(Value::as_array) else {
        return;
    };
    let Some(obj) = target.as_object_mut() else {
        return;
    };
    let tags = obj
        .entry("tags")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Some(tags) = tags.as_array_mut() {
        for tag in incoming {
            let name = tag.get("name");
            if !tags.iter().any(|t| t.get("name") == name) {
                tags.push(tag.clone());
            }
        }
    }
}

/// Adds the host's authentication schemes, so Swagger UI's "Authorize"
/// button can send the API token. Requests without a token are valid too
/// (the empty requirement) when the host runs without one.
pub(crate) fn add_security(doc: &mut Value) {
    let Some(obj) = doc.as_object_mut() else {
        return;
    };
    let components = obj
        .entry("components")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(components) = components.as_object_mut() {
        components.insert(
            "securitySchemes".into(),
            serde_json::json!({
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The host's API token (`MILADY_API_TOKEN`). Also accepted as `X-Milady-Token` or `X-Api-Key`."
                }
            }),
        );
    }
    obj.insert(
        "security".into(),
        serde_json::json!([{ "bearerAuth": [] }, {}]),
    );
}

/// Swagger UI for `doc`, with every asset inline (no network access needed).
///
/// poem-openapi keeps its Swagger UI bundle private, so this renders the
/// page of a service and swaps the embedded document for the merged one.
pub(crate) fn swagger_html(
    rendered_page: &str,
    host_spec: &str,
    merged: &Value,
) -> Result<String, SwaggerPageError> {
    let marker = format!("let spec = {host_spec};");
    if !rendered_page.contains(&marker) {
        return Err(SwaggerPageError);
    }
    Ok(rendered_page.replacen(&marker, &format!("let spec = {merged};"), 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merges_paths_schemas_and_tags() {
        let mut base = json!({"openapi":"3.0.0","paths":{"/a":{}},"components":{"schemas":{"E":{"type":"object"}}},"tags":[{"name":"Host"}]});
        let plugin = json!({"paths":{"/b":{}},"components":{"schemas":{"E":{"type":"object"},"S":{}}},"tags":[{"name":"Host"},{"name":"Secrets"}]});
        merge(&mut base, &plugin).expect("merges");
        assert!(base.pointer("/paths/~1b").is_some());
        assert!(base.pointer("/components/schemas/S").is_some());
        assert_eq!(base["tags"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn collisions_refuse_and_change_nothing() {
        let mut base =
            json!({"paths":{"/a":{"get":{}}},"components":{"schemas":{"E":{"type":"object"}}}});
        let before = base.clone();
        let err = merge(&mut base, &json!({"paths":{"/a":{}}})).expect_err("path collision");
        assert!(err.to_string().contains("/a"));
        let err = merge(
            &mut base,
            &json!({"paths":{"/z":{}},"components":{"schemas":{"E":{"type":"string"}}}}),
        )
        .expect_err("schema collision");
        assert!(err.to_string().contains("schemas/E"));
        assert_eq!(base, before);
    }

    #[test]
    fn swagger_splice() {
        let page = "<script>let spec = {\"a\":1};</script>";
        let out = swagger_html(page, "{\"a\":1}", &json!({"b":2})).expect("spliced");
        assert!(out.contains(r#"let spec = {"b":2};"#));
        assert!(swagger_html(page, "{}", &json!({})).is_err());
    }
}
