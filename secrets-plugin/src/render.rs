//! The `GET /api/secrets` body, rendered straight to JSON and cached.
//!
//! Building the [`SecretsView`](crate::model::SecretsView) and serialising it
//! through poem-openapi (a `serde_json::Value` tree, then text) was the
//! whole cost of a `GET`, and it grows with the catalog. Here:
//!
//! - everything that depends on the registry only (`pluginId`,
//!   `pluginEnabled`, `usedBy`, `required`, `description`) is rendered to
//!   JSON text once per registry version;
//! - a request renders only what depends on the environment (`value`, `set`,
//!   `source`, and how the host stores the key: `encrypted`, `unreadable`)
//!   around those fragments;
//! - the finished body is kept until either version moves, so repeated
//!   `GET`s copy bytes and nothing else.
//!
//! The bytes are exactly those poem-openapi would produce (same fields, same
//! order, same escaping); a property test holds the two side by side.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, OnceLock},
};

use abi_stable::std_types::{RArc, RVec};
use host_api::{EnvSnapshot, EnvSource, KeyRecord, RegistrySnapshot};

use crate::{
    index::{KeyInfo, SecretIndex},
    model::{SecretsBody, SharedBody},
    redact::redact,
};

/// What one key's object is made of, in output order.
enum Part {
    /// Registry-only fields, already JSON (`"name":value` pairs, commas
    /// between them included).
    Fixed(Vec<u8>),
    Value,
    Set,
    Source,
    Encrypted,
    Unreadable,
    Fingerprint,
    UpdatedAt,
    Overridden,
}

/// How the host stores one key (from its key records, SPEC §7).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stored {
    /// The config file holds it encrypted.
    pub(crate) encrypted: bool,
    /// Why its stored value cannot be read, if it cannot.
    pub(crate) unreadable: Option<String>,
    /// The fingerprint of the current value (SPEC §8), when set.
    pub(crate) fingerprint: Option<String>,
    /// When the value last changed (RFC 3339), when known.
    pub(crate) updated_at: Option<String>,
    /// The process environment overrides the stored value.
    pub(crate) overridden_by_process: bool,
}

/// [`Stored`] by key. The host's records change only with the environment
/// (a write, or start-up), so they are asked for once per rendered body.
pub(crate) type StoredKeys = BTreeMap<String, Stored>;

/// [`StoredKeys`] from the host's key records.
pub(crate) fn stored_keys(records: &[KeyRecord]) -> StoredKeys {
    records
        .iter()
        .map(|r| {
            (
                r.key.to_string(),
                Stored {
                    encrypted: r.encrypted,
                    unreadable: (!r.readable).then(|| r.unreadable_reason.to_string()),
                    fingerprint: (!r.fingerprint.is_empty()).then(|| r.fingerprint.to_string()),
                    updated_at: (!r.updated_at.is_empty()).then(|| r.updated_at.to_string()),
                    overridden_by_process: r.overridden_by_process,
                },
            )
        })
        .collect()
}

/// One key: its name, its `"KEY":` prefix, and its parts.
struct Entry {
    key: String,
    prefix: Vec<u8>,
    parts: Vec<Part>,
}

/// The registry-only JSON of every key, for one registry version.
struct Fragments {
    registry_version: u64,
    entries: Vec<Entry>,
}

struct Body {
    registry_version: u64,
    env_version: u64,
    bytes: SharedBody,
}

/// Caches the fragments per registry version and the body per (registry
/// version, environment version).
#[derive(Default)]
pub(crate) struct BodyCache {
    fragments: Mutex<Option<Arc<Fragments>>>,
    body: Mutex<Option<Body>>,
}

impl BodyCache {
    /// The body for these snapshots, rendered only when a version moved;
    /// `index` gives the secret index of `registry`, and `stored` how the
    /// host stores each key, when they are needed.
    pub(crate) fn get(
        &self,
        registry: &RegistrySnapshot,
        env: &EnvSnapshot,
        index: impl FnOnce() -> Arc<SecretIndex>,
        stored: impl FnOnce() -> StoredKeys,
    ) -> SecretsBody {
        if let Some(b) = &*lock(&self.body)
            && b.registry_version == registry.version
            && b.env_version == env.version
        {
            return SecretsBody(b.bytes.clone());
        }
        let fragments = self.fragments(registry.version, index);
        let bytes = SharedBody(RArc::new(RVec::from(render(&fragments, env, &stored()))));
        *lock(&self.body) = Some(Body {
            registry_version: registry.version,
            env_version: env.version,
            bytes: bytes.clone(),
        });
        SecretsBody(bytes)
    }

    fn fragments(
        &self,
        registry_version: u64,
        index: impl FnOnce() -> Arc<SecretIndex>,
    ) -> Arc<Fragments> {
        if let Some(f) = &*lock(&self.fragments)
            && f.registry_version == registry_version
        {
            return Arc::clone(f);
        }
        let fragments = Arc::new(Fragments::build(&index(), registry_version));
        *lock(&self.fragments) = Some(Arc::clone(&fragments));
        fragments
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Caches only: a panic elsewhere leaves nothing half-updated behind.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Renders the body for `index`, `env` and `stored` (uncached).
#[cfg(test)]
fn render_view(index: &SecretIndex, env: &EnvSnapshot, stored: &StoredKeys) -> Vec<u8> {
    render(
        &Fragments::build(index, index.registry_version),
        env,
        stored,
    )
}

/// Whether `serde_json` objects keep their keys sorted (its default) rather
/// than in insertion order (its `preserve_order` feature, which another
/// crate of the build may switch on): poem-openapi's output follows it.
fn sorted_objects() -> bool {
    static SORTED: OnceLock<bool> = OnceLock::new();
    *SORTED.get_or_init(|| {
        let mut m = serde_json::Map::new();
        m.insert("b".into(), serde_json::Value::Null);
        m.insert("a".into(), serde_json::Value::Null);
        m.keys().next().map(String::as_str) == Some("a")
    })
}

/// Field names in output order, from declaration order.
fn ordered<T>(mut fields: Vec<(&str, T)>) -> Vec<(&str, T)> {
    if sorted_objects() {
        fields.sort_by(|a, b| a.0.cmp(b.0));
    }
    fields
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    // Writing a `str` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn push_bool(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

impl Fragments {
    fn build(index: &SecretIndex, registry_version: u64) -> Self {
        let entries = index
            .keys
            .iter()
            .map(|(key, info)| {
                let mut prefix = Vec::with_capacity(key.len() + 4);
                push_str(&mut prefix, key);
                prefix.push(b':');
                Entry {
                    key: key.clone(),
                    prefix,
                    parts: parts(info),
                }
            })
            .collect();
        Self {
            registry_version,
            entries,
        }
    }
}

/// The parts of one key's object. Registry-only fields next to each other
/// are merged into one fixed fragment.
fn parts(info: &KeyInfo) -> Vec<Part> {
    enum Field {
        Fixed(Vec<u8>),
        Value,
        Set,
        Source,
        Encrypted,
        Unreadable,
        Fingerprint,
        UpdatedAt,
        Overridden,
    }
    let primary = info.primary();
    let fixed = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = Vec::new();
        f(&mut v);
        Field::Fixed(v)
    };
    let fields = ordered(vec![
        ("value", Field::Value),
        ("set", Field::Set),
        ("pluginId", fixed(&|o| push_str(o, &primary.id))),
        ("pluginEnabled", fixed(&|o| push_bool(o, primary.enabled))),
        (
            "usedBy",
            fixed(&|o| {
                o.push(b'[');
                for (i, d) in info.declared_by.iter().enumerate() {
                    if i > 0 {
                        o.push(b',');
                    }
                    o.push(b'{');
                    let refs = ordered(vec![
                        ("id", Some(d.id.as_str())),
                        ("name", Some(d.name.as_str())),
                        ("enabled", None),
                    ]);
                    for (j, (name, text)) in refs.into_iter().enumerate() {
                        if j > 0 {
                            o.push(b',');
                        }
                        push_str(o, name);
                        o.push(b':');
                        match text {
                            Some(t) => push_str(o, t),
                            None => push_bool(o, d.enabled),
                        }
                    }
                    o.push(b'}');
                }
                o.push(b']');
            }),
        ),
        ("required", fixed(&|o| push_bool(o, info.required()))),
        ("description", fixed(&|o| push_str(o, info.description()))),
        ("source", Field::Source),
        ("encrypted", Field::Encrypted),
        ("unreadable", Field::Unreadable),
        ("fingerprint", Field::Fingerprint),
        ("updatedAt", Field::UpdatedAt),
        ("overriddenByProcess", Field::Overridden),
    ]);
    let mut parts = Vec::new();
    let mut run: Vec<u8> = Vec::new();
    let flush = |run: &mut Vec<u8>, parts: &mut Vec<Part>| {
        if !run.is_empty() {
            parts.push(Part::Fixed(std::mem::take(run)));
        }
    };
    for (name, field) in fields {
        match field {
            Field::Fixed(json) => {
                if !run.is_empty() {
                    run.push(b',');
                }
                push_str(&mut run, name);
                run.push(b':');
                run.extend_from_slice(&json);
            }
            dynamic => {
                flush(&mut run, &mut parts);
                parts.push(match dynamic {
                    Field::Value => Part::Value,
                    Field::Set => Part::Set,
                    Field::Encrypted => Part::Encrypted,
                    Field::Unreadable => Part::Unreadable,
                    Field::Fingerprint => Part::Fingerprint,
                    Field::UpdatedAt => Part::UpdatedAt,
                    Field::Overridden => Part::Overridden,
                    _ => Part::Source,
                });
            }
        }
    }
    flush(&mut run, &mut parts);
    parts
}

fn source_name(source: EnvSource) -> &'static str {
    match source {
        EnvSource::Process => "process",
        EnvSource::ConfigFile => "config",
        EnvSource::Api => "api",
    }
}

fn render(fragments: &Fragments, env: &EnvSnapshot, stored: &StoredKeys) -> Vec<u8> {
    let fixed_len: usize = fragments
        .entries
        .iter()
        .map(|e| {
            e.prefix.len()
                + e.parts
                    .iter()
                    .map(|p| match p {
                        Part::Fixed(s) => s.len() + 1,
                        _ => 40,
                    })
                    .sum::<usize>()
        })
        .sum();
    let mut out = Vec::with_capacity(fixed_len + 16);
    out.extend_from_slice(b"{\"secrets\":{");
    // Entries (from the index's BTreeMap) and the environment are both
    // sorted by key: walk them together instead of a search per key, so
    // rendering stays linear in the number of keys.
    let mut vars = env.vars.iter().peekable();
    let mut stored = stored.iter().peekable();
    for (i, entry) in fragments.entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&entry.prefix);
        out.push(b'{');
        while vars
            .next_if(|v| v.key.as_str() < entry.key.as_str())
            .is_some()
        {}
        let var = vars.next_if(|v| v.key.as_str() == entry.key.as_str());
        while stored
            .next_if(|(k, _)| k.as_str() < entry.key.as_str())
            .is_some()
        {}
        let at_rest = stored
            .next_if(|(k, _)| k.as_str() == entry.key.as_str())
            .map(|(_, s)| s);
        let mut first = true;
        for part in &entry.parts {
            let mut sep = |out: &mut Vec<u8>| {
                if !first {
                    out.push(b',');
                }
                first = false;
            };
            match part {
                Part::Fixed(json) => {
                    sep(&mut out);
                    out.extend_from_slice(json);
                }
                Part::Value => {
                    sep(&mut out);
                    out.extend_from_slice(b"\"value\":");
                    push_str(&mut out, &var.map(|v| redact(&v.value)).unwrap_or_default());
                }
                Part::Set => {
                    sep(&mut out);
                    out.extend_from_slice(b"\"set\":");
                    push_bool(&mut out, var.is_some_and(|v| !v.value.is_empty()));
                }
                Part::Source => {
                    if let Some(v) = var {
                        sep(&mut out);
                        out.extend_from_slice(b"\"source\":");
                        push_str(&mut out, source_name(v.source));
                    }
                }
                Part::Encrypted => {
                    sep(&mut out);
                    out.extend_from_slice(b"\"encrypted\":");
                    push_bool(&mut out, at_rest.is_some_and(|s| s.encrypted));
                }
                Part::Unreadable => {
                    if let Some(reason) = at_rest.and_then(|s| s.unreadable.as_deref()) {
                        sep(&mut out);
                        out.extend_from_slice(b"\"unreadable\":");
                        push_str(&mut out, reason);
                    }
                }
                // Only for a key with a value: a record may outlive it.
                Part::Fingerprint => {
                    if let Some(fp) = at_rest.and_then(|s| s.fingerprint.as_deref())
                        && var.is_some()
                    {
                        sep(&mut out);
                        out.extend_from_slice(b"\"fingerprint\":");
                        push_str(&mut out, fp);
                    }
                }
                Part::UpdatedAt => {
                    if let Some(at) = at_rest.and_then(|s| s.updated_at.as_deref())
                        && var.is_some()
                    {
                        sep(&mut out);
                        out.extend_from_slice(b"\"updatedAt\":");
                        push_str(&mut out, at);
                    }
                }
                Part::Overridden => {
                    sep(&mut out);
                    out.extend_from_slice(b"\"overriddenByProcess\":");
                    push_bool(&mut out, at_rest.is_some_and(|s| s.overridden_by_process));
                }
            }
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"}}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PluginRef, SecretInfo, SecretSource, SecretsView};
    use host_api::{EnvVar, ParamSpec, PluginEntry};
    use poem_openapi::types::ToJSON as _;
    use proptest::prelude::*;

    /// The `GET` view built from the index and the environment, as
    /// poem-openapi would serialise it.
    fn view(index: &SecretIndex, env: &EnvSnapshot, stored: &StoredKeys) -> SecretsView {
        let secrets = index
            .keys
            .iter()
            .map(|(key, info)| {
                let var = env.get(key);
                let at_rest = stored.get(key);
                let primary = info.primary();
                let entry = SecretInfo {
                    value: var.map(|v| redact(&v.value)).unwrap_or_default(),
                    set: var.is_some_and(|v| !v.value.is_empty()),
                    plugin_id: primary.id.clone(),
                    plugin_enabled: primary.enabled,
                    used_by: info
                        .declared_by
                        .iter()
                        .map(|d| PluginRef {
                            id: d.id.clone(),
                            name: d.name.clone(),
                            enabled: d.enabled,
                        })
                        .collect(),
                    required: info.required(),
                    description: info.description().to_owned(),
                    source: var.map(|v| SecretSource::from(v.source)),
                    encrypted: at_rest.is_some_and(|s| s.encrypted),
                    unreadable: at_rest.and_then(|s| s.unreadable.clone()),
                    fingerprint: at_rest
                        .and_then(|s| s.fingerprint.clone())
                        .filter(|_| var.is_some()),
                    updated_at: at_rest
                        .and_then(|s| s.updated_at.clone())
                        .filter(|_| var.is_some()),
                    overridden_by_process: at_rest.is_some_and(|s| s.overridden_by_process),
                };
                (key.clone(), entry)
            })
            .collect();
        SecretsView { secrets }
    }

    /// What poem-openapi produces for the same view.
    fn reference(index: &SecretIndex, env: &EnvSnapshot, stored: &StoredKeys) -> Vec<u8> {
        let json = view(index, env, stored).to_json();
        serde_json::to_vec(&json).unwrap_or_default()
    }

    /// (key, sensitive, required, description)
    type Param = (String, bool, bool, String);
    /// (id, name, enabled, parameters)
    type Plugin = (String, String, bool, Vec<Param>);

    fn registry(plugins: Vec<Plugin>) -> RegistrySnapshot {
        RegistrySnapshot {
            version: 1,
            plugins: plugins
                .into_iter()
                .map(|(id, name, enabled, params)| PluginEntry {
                    id: id.into(),
                    name: name.into(),
                    enabled,
                    loaded: false,
                    parameters: params
                        .into_iter()
                        .map(|(key, sensitive, required, description)| ParamSpec {
                            key: key.into(),
                            kind: "string".into(),
                            description: description.into(),
                            required,
                            sensitive,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    fn env(vars: Vec<(String, String, u8)>) -> EnvSnapshot {
        let mut vars: Vec<EnvVar> = vars
            .into_iter()
            .map(|(key, value, s)| EnvVar {
                key: key.into(),
                value: value.into(),
                source: [EnvSource::Process, EnvSource::ConfigFile, EnvSource::Api][s as usize % 3],
            })
            .collect();
        vars.sort_by(|a, b| a.key.cmp(&b.key));
        vars.dedup_by(|a, b| a.key == b.key);
        EnvSnapshot {
            version: 1,
            vars: vars.into(),
        }
    }

    #[test]
    fn matches_poem_openapi_on_tricky_text() {
        let reg = registry(vec![
            (
                "@a/x".into(),
                "Quote \" back \\ slash".into(),
                false,
                vec![
                    ("K1".into(), true, true, "ctl \u{1} tab\t nl\n é 😀".into()),
                    ("K2".into(), true, false, String::new()),
                    ("N".into(), false, true, "not secret".into()),
                ],
            ),
            (
                "@b/y".into(),
                "B".into(),
                true,
                vec![("K1".into(), true, false, "b's".into())],
            ),
            (
                "@c/z".into(),
                "C".into(),
                true,
                vec![("K3".into(), true, true, "</script>".into())],
            ),
        ]);
        let index = SecretIndex::build(&reg);
        let env = env(vec![
            ("K1".into(), "sk-proj-0123456789abcdef\u{7}wxyz".into(), 0),
            ("K3".into(), "short".into(), 2),
            ("N".into(), "x".into(), 1),
        ]);
        let stored = StoredKeys::from([
            (
                "K1".to_owned(),
                Stored {
                    encrypted: true,
                    fingerprint: Some("hmac-sha256:0011223344556677".into()),
                    updated_at: Some("2025-01-01T00:00:00Z".into()),
                    overridden_by_process: true,
                    ..Stored::default()
                },
            ),
            (
                "K2".to_owned(),
                Stored {
                    encrypted: true,
                    unreadable: Some("no usable \"key\"\n".into()),
                    ..Stored::default()
                },
            ),
        ]);
        let ours = render_view(&index, &env, &stored);
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&reference(&index, &env, &stored))
        );
        let text = String::from_utf8_lossy(&ours);
        assert!(text.contains("\"encrypted\":true"), "{text}");
        assert!(text.contains("\"unreadable\":\"no usable"), "{text}");
        assert!(!String::from_utf8_lossy(&ours).contains("0123456789abcdef"));
    }

    #[test]
    fn empty_registry_renders_an_empty_map() {
        let index = SecretIndex::build(&registry(vec![]));
        let env = env(vec![]);
        let none = StoredKeys::new();
        assert_eq!(
            render_view(&index, &env, &none),
            reference(&index, &env, &none)
        );
        assert_eq!(render_view(&index, &env, &none), b"{\"secrets\":{}}");
    }

    #[test]
    fn cache_follows_both_versions() {
        let cache = BodyCache::default();
        let mut reg = registry(vec![(
            "@a/x".into(),
            "A".into(),
            false,
            vec![("K".into(), true, true, "d".into())],
        )]);
        let mut e = env(vec![]);
        let index = |r: &RegistrySnapshot| {
            let i = Arc::new(SecretIndex::build(r));
            move || i
        };
        let first = cache.get(&reg, &e, index(&reg), StoredKeys::new);
        let again = cache.get(&reg, &e, index(&reg), StoredKeys::new);
        assert_eq!(
            first.as_bytes().as_ptr(),
            again.as_bytes().as_ptr(),
            "the cached buffer is shared"
        );
        e = env(vec![(
            "K".into(),
            "a-long-enough-secret-value-1234".into(),
            2,
        )]);
        e.version = 2;
        let second = cache.get(&reg, &e, index(&reg), StoredKeys::new);
        assert!(String::from_utf8_lossy(second.as_bytes()).contains("\"set\":true"));
        reg.plugins[0].enabled = true;
        reg.version = 2;
        let third = cache.get(&reg, &e, index(&reg), StoredKeys::new);
        assert!(String::from_utf8_lossy(third.as_bytes()).contains("\"pluginEnabled\":true"));
        assert_eq!(
            third.as_bytes(),
            reference(&SecretIndex::build(&reg), &e, &StoredKeys::new())
        );
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof!["[A-Z_]{1,6}", ".{0,30}", "[\\x00-\\x1f\"\\\\a-z]{0,12}",]
    }

    proptest! {
        #[test]
        fn matches_poem_openapi(
            plugins in proptest::collection::vec(
                (
                    "@[a-c]/[a-z]{1,3}",
                    text(),
                    any::<bool>(),
                    proptest::collection::vec(("[A-E]", any::<bool>(), any::<bool>(), text()), 0..4),
                ),
                0..6,
            ),
            vars in proptest::collection::vec(("[A-F]", ".{1,40}", 0u8..3), 0..6),
            stored in proptest::collection::btree_map(
                "[A-F]",
                (
                    (any::<bool>(), proptest::option::of(text())),
                    (proptest::option::of(text()), proptest::option::of(text()), any::<bool>()),
                ),
                0..6,
            ),
        ) {
            let index = SecretIndex::build(&registry(plugins));
            let env = env(vars);
            let stored: StoredKeys = stored
                .into_iter()
                .map(|(k, ((encrypted, unreadable), (fingerprint, updated_at, overridden_by_process)))| {
                    (k, Stored { encrypted, unreadable, fingerprint, updated_at, overridden_by_process })
                })
                .collect();
            prop_assert_eq!(
                String::from_utf8_lossy(&render_view(&index, &env, &stored)).into_owned(),
                String::from_utf8_lossy(&reference(&index, &env, &stored)).into_owned()
            );
        }
    }
}
