//! Validation of a `PUT /api/secrets` body, all of it before anything is
//! written: either every entry is acceptable, or the error names every
//! rejected key with its reason. No message ever contains a value.
//!
//! A body of tens of thousands of bad keys must not buy a megabyte-long
//! error and a fraction of a second of CPU: validation stops at the
//! [`MAX_REJECTED`]th refusal and counts the entries it did not reach.

use std::{borrow::Cow, collections::BTreeMap};

use host_api::{EnvChange, EnvSnapshot, ErrorCode};
use serde_json::Value;

use crate::{
    index::SecretIndex,
    model::{
        BLANK, EMPTY_KEY, HAS_NUL, INVISIBLE, MAX_REJECTED, NOT_A_STRING, NOT_DECLARED, PLACEHOLDER,
    },
    redact::{is_invisible, redact},
};

/// Why a body was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Invalid {
    /// The body as a whole is unusable (`code`, `message`).
    Body(ErrorCode, &'static str),
    /// Some entries are unusable: key → reason (at most [`MAX_REJECTED`]),
    /// and how many entries validation did not reach after that many.
    Keys(BTreeMap<String, String>, usize),
}

/// Validates a whole request body.
///
/// `host_check` is the host's verdict on a key (invalid name, block list).
pub(crate) fn validate(
    body: &Value,
    index: &SecretIndex,
    env: &EnvSnapshot,
    host_check: impl Fn(&str) -> Option<String>,
) -> Result<Vec<EnvChange>, Invalid> {
    let Some(object) = body.as_object() else {
        return Err(Invalid::Body(
            ErrorCode::InvalidBody,
            "the body must be a JSON object",
        ));
    };
    let secrets = match object.get("secrets") {
        None => {
            return Err(Invalid::Body(
                ErrorCode::MissingSecrets,
                "the body has no `secrets` object",
            ));
        }
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(Invalid::Body(
                ErrorCode::InvalidSecretsType,
                "`secrets` must be an object of key → string",
            ));
        }
    };
    // `{"secrets": {}}` is a valid no-op (SPEC §8): no changes, no error.
    let mut rejected = BTreeMap::new();
    let mut changes = Vec::with_capacity(secrets.len());
    for (checked, (key, value)) in secrets.iter().enumerate() {
        if rejected.len() == MAX_REJECTED {
            return Err(Invalid::Keys(rejected, secrets.len() - checked));
        }
        match check_entry(key, value, index, env, &host_check) {
            Ok(change) => changes.push(change),
            Err(reason) => {
                // Keys are echoed back, so only valid names are echoed as-is.
                rejected.insert(printable_key(key), reason.into_owned());
            }
        }
    }
    if rejected.is_empty() {
        Ok(changes)
    } else {
        Err(Invalid::Keys(rejected, 0))
    }
}

/// One entry: the change it asks for, or why it is refused. The reason is
/// what the client reads: one of this plugin's, or the host's own.
fn check_entry(
    key: &str,
    value: &Value,
    index: &SecretIndex,
    env: &EnvSnapshot,
    host_check: &impl Fn(&str) -> Option<String>,
) -> Result<EnvChange, Cow<'static, str>> {
    if key.is_empty() {
        return Err(EMPTY_KEY.into());
    }
    if let Some(reason) = host_check(key) {
        return Err(reason.into());
    }
    if !index.keys.contains_key(key) {
        return Err(NOT_DECLARED.into());
    }
    let Value::String(value) = value else {
        return Err(NOT_A_STRING.into());
    };
    if value.is_empty() {
        return Ok(EnvChange::clear(key));
    }
    if value.contains('\0') {
        return Err(HAS_NUL.into());
    }
    if value.trim().is_empty() {
        return Err(BLANK.into());
    }
    // Zero-width spaces, a byte order mark, bidirectional controls: stored,
    // such a value would count as a set secret that no one can see.
    if value.chars().all(is_invisible) {
        return Err(INVISIBLE.into());
    }
    if let Some(current) = env.get(key)
        && redact(&current.value) == *value
    {
        return Err(PLACEHOLDER.into());
    }
    Ok(EnvChange::set(key, value.as_str()))
}

/// Keys are attacker-chosen text echoed in an error: keep them short and
/// printable.
pub(crate) fn printable_key(key: &str) -> String {
    const MAX: usize = 128;
    let mut out: String = key
        .chars()
        .take(MAX)
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect();
    if key.chars().count() > MAX {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use host_api::{EnvSource, EnvVar, ParamSpec, PluginEntry, RegistrySnapshot};
    use proptest::prelude::*;
    use serde_json::json;

    fn index() -> SecretIndex {
        SecretIndex::build(&RegistrySnapshot {
            version: 1,
            plugins: vec![PluginEntry {
                id: "p".into(),
                name: "P".into(),
                enabled: true,
                loaded: false,
                parameters: vec![
                    ParamSpec::secret("OPENAI_API_KEY", "", true),
                    ParamSpec::secret("OTHER_KEY", "", false),
                    ParamSpec::secret("LD_PRELOAD", "", false),
                ]
                .into(),
            }]
            .into(),
        })
    }

    fn env_with(key: &str, value: &str) -> EnvSnapshot {
        EnvSnapshot {
            version: 3,
            vars: vec![EnvVar {
                key: key.into(),
                value: value.into(),
                source: EnvSource::Api,
            }]
            .into(),
        }
    }

    fn host_check(key: &str) -> Option<String> {
        (key == "LD_PRELOAD").then(|| "blocked by the host".to_owned())
    }

    #[test]
    fn body_shapes() {
        let e = EnvSnapshot {
            version: 1,
            vars: Default::default(),
        };
        let v = |b: Value| validate(&b, &index(), &e, host_check);
        assert_eq!(
            v(json!([1])),
            Err(Invalid::Body(
                ErrorCode::InvalidBody,
                "the body must be a JSON object"
            ))
        );
        assert!(matches!(
            v(json!({})),
            Err(Invalid::Body(ErrorCode::MissingSecrets, _))
        ));
        assert!(matches!(
            v(json!({"secrets": "x"})),
            Err(Invalid::Body(ErrorCode::InvalidSecretsType, _))
        ));
        assert_eq!(v(json!({"secrets": {}})), Ok(Vec::new()));
    }

    #[test]
    fn every_rejected_key_has_its_reason_and_nothing_is_accepted() {
        let long = "sk-proj-0123456789abcdefghijklmnop";
        let e = env_with("OPENAI_API_KEY", long);
        let body = json!({"secrets": {
            "OPENAI_API_KEY": redact(long),
            "OTHER_KEY": " \t",
            "UNKNOWN_KEY": "v",
            "LD_PRELOAD": "/x.so",
            "": "v",
        }});
        let Err(Invalid::Keys(r, 0)) = validate(&body, &index(), &e, host_check) else {
            panic!("expected rejections");
        };
        assert_eq!(r["OPENAI_API_KEY"], PLACEHOLDER);
        assert_eq!(r["OTHER_KEY"], BLANK);
        assert_eq!(r["UNKNOWN_KEY"], NOT_DECLARED);
        assert_eq!(r["LD_PRELOAD"], "blocked by the host");
        assert_eq!(r[""], EMPTY_KEY);
        let body = json!({"secrets": {"OPENAI_API_KEY": 5, "OTHER_KEY": "a\u{0}b"}});
        let Err(Invalid::Keys(r, 0)) = validate(&body, &index(), &e, host_check) else {
            panic!("expected rejections");
        };
        assert_eq!(r["OPENAI_API_KEY"], NOT_A_STRING);
        assert_eq!(r["OTHER_KEY"], HAS_NUL);
    }

    #[test]
    fn values_of_invisible_characters_only_are_refused_like_blank_ones() {
        let e = env_with("OPENAI_API_KEY", "old");
        for invisible in [
            "\u{200b}\u{200b}",
            "\u{feff}",
            "\u{202e}",
            " \u{2060}\t",
            "\u{3164}",
            "\u{2800}\u{fe0f}",
            "\u{e0041}",
        ] {
            let body = json!({"secrets": {"OPENAI_API_KEY": invisible}});
            let Err(Invalid::Keys(r, 0)) = validate(&body, &index(), &e, host_check) else {
                panic!("{invisible:?} accepted");
            };
            assert_eq!(r["OPENAI_API_KEY"], INVISIBLE, "{invisible:?}");
        }
        // Invisible characters inside a visible value are the client's business.
        let body = json!({"secrets": {"OPENAI_API_KEY": "sk-\u{200b}visible"}});
        assert!(validate(&body, &index(), &e, host_check).is_ok());
    }

    #[test]
    fn validation_stops_at_the_cap_and_counts_what_it_did_not_reach() {
        let e = env_with("OPENAI_API_KEY", "old");
        let secrets: serde_json::Map<String, Value> = (0..35_000)
            .map(|i| (format!("UNKNOWN_{i:05}"), json!("v")))
            .collect();
        let body = json!({ "secrets": secrets });
        let Err(Invalid::Keys(r, unlisted)) = validate(&body, &index(), &e, host_check) else {
            panic!("expected rejections");
        };
        assert_eq!(r.len(), MAX_REJECTED);
        assert_eq!(unlisted, 35_000 - MAX_REJECTED);
        assert!(
            r.keys().all(|k| k.as_str() < "UNKNOWN_00100"),
            "the first 100"
        );
        // Exactly at the cap: nothing is left out.
        let secrets: serde_json::Map<String, Value> = (0..MAX_REJECTED)
            .map(|i| (format!("UNKNOWN_{i:05}"), json!("v")))
            .collect();
        let body = json!({ "secrets": secrets });
        assert!(matches!(
            validate(&body, &index(), &e, host_check),
            Err(Invalid::Keys(r, 0)) if r.len() == MAX_REJECTED
        ));
    }

    #[test]
    fn sets_and_clears() {
        let e = env_with("OPENAI_API_KEY", "old");
        let body = json!({"secrets": {"OPENAI_API_KEY": "", "OTHER_KEY": "new"}});
        let changes = validate(&body, &index(), &e, host_check).expect("valid");
        assert_eq!(
            changes,
            vec![
                EnvChange::clear("OPENAI_API_KEY"),
                EnvChange::set("OTHER_KEY", "new")
            ]
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bodies_never_panic_and_never_echo_values(
            key in "\\PC{0,40}", value in "\\PC{0,40}", canary in "[a-z]{12}"
        ) {
            let e = env_with("OPENAI_API_KEY", "x");
            let secret = format!("CANARY{canary}{value}");
            let body = json!({"secrets": {key.clone(): secret.clone(), "OPENAI_API_KEY": secret.clone()}});
            match validate(&body, &index(), &e, host_check) {
                Ok(changes) => {
                    for change in &changes {
                        prop_assert!(index().keys.contains_key(change.key()));
                    }
                }
                Err(Invalid::Keys(r, _)) => {
                    for reason in r.values() {
                        prop_assert!(!reason.contains(&secret));
                    }
                }
                Err(Invalid::Body(..)) => prop_assert!(false, "body is well-formed"),
            }
        }
    }
}
