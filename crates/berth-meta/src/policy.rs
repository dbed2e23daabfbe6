//! Per-project policies that the metadata store keeps but does not interpret: tag
//! immutability rules. Their selectors are JSON text that `berth-core` reads.

use crate::access::ProjectId;

/// A tag immutability rule of a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImmutableRule {
    /// Its id.
    pub id: i64,
    /// Its project.
    pub project_id: ProjectId,
    /// Whether it is off.
    pub disabled: bool,
    /// Its priority (Harbor's; listed in order of it, then of id).
    pub priority: i64,
    /// Its repository and tag selectors, as JSON text.
    pub selectors: String,
    /// When it was created.
    pub created_ms: i64,
    /// When it last changed.
    pub updated_ms: i64,
}

/// The columns [`rule_from_row`] reads, of `immutable_rules r`.
pub(crate) const RULE_COLUMNS: &str =
    "r.id, r.project_id, r.disabled, r.priority, r.selectors, r.created_ms, r.updated_ms";

/// A rule from a row of [`RULE_COLUMNS`].
pub(crate) fn rule_from_row(
    r: &impl crate::access::columns::Columns,
) -> Result<ImmutableRule, crate::MetaError> {
    Ok(ImmutableRule {
        id: r.int(0)?,
        project_id: r.int(1)?,
        disabled: r.flag(2)?,
        priority: r.int(3)?,
        selectors: r.text(4)?,
        created_ms: r.int(5)?,
        updated_ms: r.int(6)?,
    })
}
