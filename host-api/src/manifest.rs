//! What a plugin declares about itself.

use abi_stable::{
    StableAbi,
    std_types::{RString, RVec},
};

/// A configuration parameter a plugin reads from the runtime environment.
///
/// The host treats every parameter with `sensitive == true` as a secret:
/// it is listed by `GET /api/secrets` and may be written by `PUT /api/secrets`.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    /// Environment-variable name, e.g. `OPENAI_API_KEY`.
    pub key: RString,
    /// Value type as Milady's catalog spells it: `string`, `boolean`, `number`.
    pub kind: RString,
    /// One line for humans.
    pub description: RString,
    /// Whether the plugin cannot work without it.
    pub required: bool,
    /// Whether the value is a secret (redacted on read, writable through the API).
    pub sensitive: bool,
}

/// The manifest every plugin returns from [`crate::PluginMod::manifest`].
///
/// ```
/// use host_api::{ParamSpec, PluginManifest};
/// let m = PluginManifest::new("@acme/plugin-weather", "Weather", "1.0.0")
///     .with_route("/api/weather")
///     .with_param(ParamSpec::secret("WEATHER_API_KEY", "API key for the weather service", true));
/// assert_eq!(m.parameters.len(), 1);
/// ```
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct PluginManifest {
    /// Unique id, usually the package name, e.g. `@elizaos/plugin-secrets`.
    pub id: RString,
    /// Display name.
    pub name: RString,
    /// The plugin's own version (semver).
    pub version: RString,
    /// One paragraph for humans.
    pub description: RString,
    /// Path prefixes the plugin serves, e.g. `/api/secrets`. The host routes
    /// the prefix itself and everything below it to the plugin.
    pub routes: RVec<RString>,
    /// Parameters the plugin reads from the runtime environment.
    pub parameters: RVec<ParamSpec>,
}

impl ParamSpec {
    /// A sensitive string parameter: a secret the host lists (redacted) in
    /// `GET /api/secrets` and lets `PUT /api/secrets` write.
    ///
    /// ```
    /// let p = host_api::ParamSpec::secret("OPENAI_API_KEY", "API key for OpenAI", true);
    /// assert!(p.sensitive && p.required);
    /// assert_eq!(p.kind.as_str(), "string");
    /// ```
    pub fn secret(key: &str, description: &str, required: bool) -> Self {
        Self {
            key: key.into(),
            kind: "string".into(),
            description: description.into(),
            required,
            sensitive: true,
        }
    }

    /// A non-sensitive, optional parameter of the given kind (`string`,
    /// `boolean`, `number`). Its value is not a secret, and the secrets API
    /// does not write it.
    ///
    /// ```
    /// let p = host_api::ParamSpec::setting("OPENAI_MODEL", "string", "Model name");
    /// assert!(!p.sensitive && !p.required);
    /// ```
    pub fn setting(key: &str, kind: &str, description: &str) -> Self {
        Self {
            key: key.into(),
            kind: kind.into(),
            description: description.into(),
            required: false,
            sensitive: false,
        }
    }
}

impl PluginManifest {
    /// A manifest with no routes, parameters or description yet. `id` must
    /// be unique among the host's plugins; `version` is the plugin's own.
    pub fn new(id: &str, name: &str, version: &str) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            version: version.into(),
            description: RString::new(),
            routes: RVec::new(),
            parameters: RVec::new(),
        }
    }

    /// Adds a description.
    pub fn with_description(mut self, description: &str) -> Self {
        self.description = description.into();
        self
    }

    /// Adds a route prefix: an absolute path without a trailing slash, made
    /// of ASCII letters, digits and `/-_.`, e.g. `/api/weather`. The host
    /// refuses a plugin whose prefix overlaps its own routes (`/api/plugins`,
    /// `/api/health`, `/openapi.json`, `/docs`) or another plugin's.
    pub fn with_route(mut self, prefix: &str) -> Self {
        self.routes.push(prefix.into());
        self
    }

    /// Adds a parameter the plugin reads from the runtime environment.
    pub fn with_param(mut self, param: ParamSpec) -> Self {
        self.parameters.push(param);
        self
    }
}
