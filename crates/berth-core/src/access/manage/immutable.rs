//! Tag immutability rules of a project ([`crate::immutable`]): listed and changed by those
//! Harbor's roles allow (maintainers and project administrators), and system administrators.

use berth_meta::{ImmutableRule, Project};

use super::{Admin, Caller, ProjectRef};
use crate::access::{Action, Permission, Resource};
use crate::immutable::RuleSelectors;
use crate::{Error, Registry};

/// Most rules a project may have (Harbor's limit).
pub const MAX_IMMUTABLE_RULES: usize = 15;

/// A rule as the caller gives it.
#[derive(Debug, Clone)]
pub struct RuleRequest {
    /// Whether it is off.
    pub disabled: bool,
    /// Its priority.
    pub priority: i64,
    /// What it selects.
    pub selectors: RuleSelectors,
}

impl RuleRequest {
    /// The rule to store for project `project_id` (with id `id` when it exists).
    fn rule(&self, project_id: i64, id: i64) -> Result<ImmutableRule, Error> {
        // Compile once to refuse what would never match.
        self.selectors.selection()?;
        let selectors =
            serde_json::to_string(&self.selectors).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(ImmutableRule {
            id,
            project_id,
            disabled: self.disabled,
            priority: self.priority,
            selectors,
            created_ms: 0,
            updated_ms: 0,
        })
    }
}

impl Admin {
    async fn immutable_project(
        &self,
        who: &Caller,
        project: &ProjectRef,
        action: Action,
    ) -> Result<Project, Error> {
        self.project_for(
            who,
            project,
            Permission::new(Resource::ImmutableTag, action),
        )
        .await
    }

    /// The rules of `project` with their selectors, by priority then id.
    ///
    /// # Errors
    /// As [`Access::require`](crate::Access::require).
    pub async fn immutable_rules(
        &self,
        who: &Caller,
        registry: &Registry,
        project: &ProjectRef,
    ) -> Result<Vec<(ImmutableRule, RuleSelectors)>, Error> {
        let p = self.immutable_project(who, project, Action::List).await?;
        registry
            .meta()
            .immutable_rules(&p.name)
            .await?
            .into_iter()
            .map(|r| RuleSelectors::of(&r).map(|s| (r, s)))
            .collect()
    }

    /// Add a rule to `project`; returns its id.
    ///
    /// # Errors
    /// As [`Access::require`](crate::Access::require); [`Error::Invalid`] for bad selectors
    /// or past [`MAX_IMMUTABLE_RULES`].
    pub async fn create_immutable_rule(
        &self,
        who: &Caller,
        registry: &Registry,
        project: &ProjectRef,
        req: &RuleRequest,
    ) -> Result<i64, Error> {
        let p = self.immutable_project(who, project, Action::Create).await?;
        let rule = req.rule(p.id, 0)?;
        if registry.meta().immutable_rules(&p.name).await?.len() >= MAX_IMMUTABLE_RULES {
            return Err(Error::Invalid(format!(
                "project {} has {MAX_IMMUTABLE_RULES} immutability rules, the most it may have",
                p.name
            )));
        }
        let id = registry.meta().create_immutable_rule(&rule).await?;
        self.audit(
            who,
            "create",
            "immutable_rule",
            &id.to_string(),
            Some(&p.name),
        );
        Ok(id)
    }

    /// Change rule `id` of `project`.
    ///
    /// # Errors
    /// As [`Access::require`](crate::Access::require); [`Error::Invalid`];
    /// [`Error::NotFound`].
    pub async fn update_immutable_rule(
        &self,
        who: &Caller,
        registry: &Registry,
        project: &ProjectRef,
        id: i64,
        req: &RuleRequest,
    ) -> Result<(), Error> {
        let p = self.immutable_project(who, project, Action::Update).await?;
        if !registry
            .meta()
            .update_immutable_rule(&req.rule(p.id, id)?)
            .await?
        {
            return Err(Error::NotFound(format!(
                "immutability rule {id} of project {} does not exist",
                p.name
            )));
        }
        self.audit(
            who,
            "update",
            "immutable_rule",
            &id.to_string(),
            Some(&p.name),
        );
        Ok(())
    }

    /// Delete rule `id` of `project`.
    ///
    /// # Errors
    /// As [`Access::require`](crate::Access::require); [`Error::NotFound`].
    pub async fn delete_immutable_rule(
        &self,
        who: &Caller,
        registry: &Registry,
        project: &ProjectRef,
        id: i64,
    ) -> Result<(), Error> {
        let p = self.immutable_project(who, project, Action::Delete).await?;
        if !registry.meta().delete_immutable_rule(p.id, id).await? {
            return Err(Error::NotFound(format!(
                "immutability rule {id} of project {} does not exist",
                p.name
            )));
        }
        self.audit(
            who,
            "delete",
            "immutable_rule",
            &id.to_string(),
            Some(&p.name),
        );
        Ok(())
    }
}
