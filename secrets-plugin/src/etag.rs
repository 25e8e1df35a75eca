//! The `ETag` of the secrets state, and what an `If-Match` header on a
//! `PUT` asks for.
//!
//! A tag is `"<boot>-<environment version>-<registry version>"`: `boot`
//! tells this process's tags from those of an earlier run, whose versions
//! counted from zero again. A version from a store shared by a fleet of
//! hosts (at or above [`host_api::SHARED_VERSION_BASE`], SPEC §9) names
//! the same state on every host and across restarts: its tag is
//! `"fleet-<environment version>-<registry version>"`, valid on any host.

/// What `If-Match` asks of a `PUT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Precondition {
    /// No header, or `*`: write whatever the current state.
    Any,
    /// Write only if the runtime environment is still at this version.
    EnvVersion(u64),
    /// A tag that cannot name the current state (another run's, another
    /// registry version's, or not one of ours): refuse.
    Stale,
}

/// Makes this process's tags and reads them back.
pub(crate) struct ETags {
    boot: u64,
}

impl ETags {
    /// Tags for this process.
    pub(crate) fn new() -> Self {
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id()).rotate_left(32);
        Self { boot }
    }

    /// The tag of a state.
    pub(crate) fn tag(&self, env_version: u64, registry_version: u64) -> String {
        if env_version >= host_api::SHARED_VERSION_BASE {
            return format!("\"fleet-{env_version}-{registry_version}\"");
        }
        format!("\"{:x}-{env_version}-{registry_version}\"", self.boot)
    }

    /// What `if_match` (the header's value, if sent) asks for, given the
    /// current registry version.
    pub(crate) fn precondition(
        &self,
        if_match: Option<&str>,
        registry_version: u64,
    ) -> Precondition {
        match if_match.map(str::trim) {
            None | Some("*") => Precondition::Any,
            Some(tag) => match self.env_version(tag, registry_version) {
                Some(v) => Precondition::EnvVersion(v),
                None => Precondition::Stale,
            },
        }
    }

    /// The environment version `tag` pins, if it is one of this process's
    /// tags for the current registry.
    fn env_version(&self, tag: &str, registry_version: u64) -> Option<u64> {
        let tag = tag.trim().trim_start_matches("W/").trim_matches('"');
        let mut parts = tag.split('-');
        let first = parts.next()?;
        let env: u64 = parts.next()?.parse().ok()?;
        let registry: u64 = parts.next()?.parse().ok()?;
        let ours = if first == "fleet" {
            env >= host_api::SHARED_VERSION_BASE
        } else {
            u64::from_str_radix(first, 16).ok()? == self.boot && env < host_api::SHARED_VERSION_BASE
        };
        (parts.next().is_none() && ours && registry == registry_version).then_some(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAGS: ETags = ETags { boot: 0xbeef };

    fn asks(if_match: &str) -> Precondition {
        TAGS.precondition(Some(if_match), 3)
    }

    #[test]
    fn a_tag_reads_back_as_its_version() {
        let tag = TAGS.tag(7, 3);
        assert_eq!(tag, "\"beef-7-3\"");
        assert_eq!(asks(&tag), Precondition::EnvVersion(7));
        assert_eq!(asks(&format!("  {tag}\t")), Precondition::EnvVersion(7));
    }

    #[test]
    fn fleet_tags_name_the_shared_version_on_any_host() {
        let v = host_api::SHARED_VERSION_BASE + 12;
        let tag = TAGS.tag(v, 3);
        assert_eq!(tag, format!("\"fleet-{v}-3\""));
        // Another process (another host of the fleet) reads it back.
        let other = ETags { boot: 0x1234 };
        assert_eq!(
            other.precondition(Some(&tag), 3),
            Precondition::EnvVersion(v)
        );
        // A fleet tag below the shared range, or a boot tag inside it, is not ours.
        assert_eq!(asks("\"fleet-7-3\""), Precondition::Stale);
        assert_eq!(asks(&format!("\"beef-{v}-3\"")), Precondition::Stale);
    }

    #[test]
    fn weak_tags_are_read_like_strong_ones() {
        assert_eq!(asks("W/\"beef-7-3\""), Precondition::EnvVersion(7));
    }

    #[test]
    fn no_header_or_star_asks_nothing() {
        assert_eq!(TAGS.precondition(None, 3), Precondition::Any);
        assert_eq!(asks("*"), Precondition::Any);
        assert_eq!(asks(" * "), Precondition::Any);
    }

    #[test]
    fn a_list_is_not_split_and_is_refused() {
        // Even when it holds the current tag: refusing writes nothing, so
        // the client only has to GET and retry.
        assert_eq!(asks("\"beef-7-3\", \"beef-8-3\""), Precondition::Stale);
        assert_eq!(asks("\"beef-7-3\",W/\"x\""), Precondition::Stale);
    }

    #[test]
    fn other_runs_and_registry_versions_are_stale() {
        assert_eq!(asks("\"beee-7-3\""), Precondition::Stale);
        assert_eq!(asks("\"beef-7-4\""), Precondition::Stale);
    }

    #[test]
    fn garbage_is_stale() {
        for garbage in [
            "",
            "\"\"",
            "W/",
            "beef",
            "\"beef-7\"",
            "\"beef-7-3-1\"",
            "\"zz-7-3\"",
            "\"beef--3\"",
            "\"beef-x-3\"",
            "\"beef-7-3x\"",
            "\"beef-99999999999999999999-3\"",
            "\u{0}\u{1b}[0m",
        ] {
            assert_eq!(asks(garbage), Precondition::Stale, "{garbage:?}");
        }
    }
}
