//! The `ETag` of the secrets state, and what an `If-Match` header on a
//! `PUT` asks for.
//!
//! A tag is `"<boot>-<environment version>-<registry version>"`: `boot`
//! tells this process's tags from those of an earlier run, whose versions
//! counted from zero again.

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
        let boot = u64::from_str_radix(parts.next()?, 16).ok()?;
        let env: u64 = parts.next()?.parse().ok()?;
        let registry: u64 = parts.next()?.parse().ok()?;
        (parts.next().is_none() && boot == self.boot && registry == registry_version).then_some(env)
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
