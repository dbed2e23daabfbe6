//! The selector object shared by tag immutability and retention rules.

use berth_core::selector::Selector;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A selector of a tag immutability or retention rule (Harbor's `ImmutableSelector` and
/// `RetentionSelector`, which have the same shape).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SelectorObj {
    /// `doublestar`.
    #[serde(default = "doublestar")]
    pub kind: String,
    /// `matches` or `excludes` (tags); `repoMatches` or `repoExcludes` (repositories).
    pub decoration: String,
    /// A glob: `*`, `**`, `?`, `[a-z]`, `{a,b}`.
    pub pattern: String,
    /// For a retention rule's tag selectors: `{"untagged":true}` to select untagged artifacts
    /// too. Unused by immutability rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extras: Option<String>,
}

fn doublestar() -> String {
    "doublestar".into()
}

impl From<SelectorObj> for Selector {
    fn from(s: SelectorObj) -> Self {
        Selector {
            kind: s.kind,
            decoration: s.decoration,
            pattern: s.pattern,
            extras: s.extras,
        }
    }
}

impl From<Selector> for SelectorObj {
    fn from(s: Selector) -> Self {
        SelectorObj {
            kind: s.kind,
            decoration: s.decoration,
            pattern: s.pattern,
            extras: s.extras,
        }
    }
}
