//! A project's retention policy and its runs ([`crate::retention`]), for those Harbor's roles
//! allow: developers, maintainers and project administrators of the project (and system
//! administrators) may read, change, run and stop it; guests may not.

use berth_meta::{Listing, Paging, RetentionExecution, RetentionPolicy, RetentionTask};

use super::{Admin, Caller, ProjectRef};
use crate::access::{Action, Permission, Resource};
use crate::retention::{next_run, report, Policy};
use crate::{Error, Registry};

/// A project's retention policy, as the caller sees it.
#[derive(Debug, Clone)]
pub struct RetentionView {
    /// Its id.
    pub id: i64,
    /// Its project's id.
    pub project_id: i64,
    /// Its project's name.
    pub project: String,
    /// Its rules and schedule.
    pub policy: Policy,
    /// When its schedule fires next (milliseconds since the Unix epoch), if it has one.
    pub next_run_ms: Option<i64>,
    /// When it was created.
    pub created_ms: i64,
    /// When it last changed.
    pub updated_ms: i64,
}

impl RetentionView {
    fn of(p: &RetentionPolicy) -> Result<Self, Error> {
        let policy = Policy::from_stored(&p.rules, p.cron.as_deref())?;
        let next_run_ms = p.cron.as_deref().and_then(|c| next_run(c, p.fired_ms));
        Ok(Self {
            id: p.id,
            project_id: p.project_id,
            project: p.project.clone(),
            policy,
            next_run_ms,
            created_ms: p.created_ms,
            updated_ms: p.updated_ms,
        })
    }
}

fn no_policy(id: i64) -> Error {
    Error::NotFound(format!("retention policy {id} does not exist"))
}

impl Admin {
    /// Policy `id`, if the caller may do `action` with its project's retention.
    async fn retention_for(
        &self,
        who: &Caller,
        registry: &Registry,
        id: i64,
        action: Action,
    ) -> Result<RetentionPolicy, Error> {
        who.require_signed_in()?;
        let p = registry
            .meta()
            .retention_policy(id)
            .await?
            .ok_or_else(|| no_policy(id))?;
        self.project_for(
            who,
            &ProjectRef::Id(p.project_id),
            Permission::new(Resource::TagRetention, action),
        )
        .await?;
        Ok(p)
    }

    /// Run `eid` of policy `id`, if the caller may do `action` with it.
    async fn retention_run_for(
        &self,
        who: &Caller,
        registry: &Registry,
        id: i64,
        eid: i64,
        action: Action,
    ) -> Result<RetentionExecution, Error> {
        self.retention_for(who, registry, id, action).await?;
        registry
            .meta()
            .retention_execution(eid)
            .await?
            .filter(|e| e.policy_id == id)
            .ok_or_else(|| Error::NotFound(format!("retention policy {id} has no run {eid}")))
    }

    /// Policy `id`.
    ///
    /// # Errors
    /// [`Error::NotFound`]; as [`Access::require`](crate::Access::require).
    pub async fn retention_policy(
        &self,
        who: &Caller,
        registry: &Registry,
        id: i64,
    ) -> Result<RetentionView, Error> {
        RetentionView::of(&self.retention_for(who, registry, id, Action::Read).await?)
    }

    /// The id of the policy of `project`, if it has one (Harbor's project metadata
    /// `retention_id`), for those who may read the project.
    ///
    /// # Errors
    /// As [`Access::require`](crate::Access::require).
    pub async fn project_retention_id(
        &self,
        who: &Caller,
        registry: &Registry,
        project: &ProjectRef,
    ) -> Result<Option<i64>, Error> {
        let p = self
            .project_for(
                who,
                project,
                Permission::new(Resource::Project, Action::Read),
            )
            .await?;
        Ok(registry
            .meta()
            .project_retention_policy(p.id)
            .await?
            .map(|r| r.id))
    }

    /// Give project `project_id` its policy; returns the policy's id.
    ///
    /// # Errors
    /// As [`Access::require`](crate::Access::require); [`Error::Invalid`] for a bad policy;
    /// [`Error::Conflict`] if the project has one.
    pub async fn create_retention_policy(
        &self,
        who: &Caller,
        registry: &Registry,
        project_id: i64,
        policy: Policy,
    ) -> Result<i64, Error> {
        who.require_signed_in()?;
        let project = self
            .project_for(
                who,
                &ProjectRef::Id(project_id),
                Permission::new(Resource::TagRetention, Action::Create),
            )
            .await?;
        let policy = policy.normalized()?;
        let record = RetentionPolicy {
            id: 0,
            project_id: project.id,
            project: project.name.clone(),
            rules: policy.to_stored()?,
            cron: policy.schedule.clone(),
            fired_ms: 0,
            created_ms: 0,
            updated_ms: 0,
        };
        let id = match registry.meta().create_retention_policy(&record).await {
            Ok(id) => id,
            Err(berth_meta::MetaError::AlreadyExists(_)) => {
                let existing = registry
                    .meta()
                    .project_retention_policy(project.id)
                    .await?
                    .map_or(0, |p| p.id);
                return Err(Error::Conflict(format!(
                    "project {} already has retention policy {existing}: change that one",
                    project.name
                )));
            }
            Err(e) => return Err(e.into()),
        };
        self.audit(
            who,
            "create",
            "retention",
            &id.to_string(),
            Some(&project.name),
        );
        Ok(id)
    }

    /// Replace the rules and schedule of policy `id`. A policy stays with its project:
    /// `project_id`, if given, must be its project's.
    ///
    /// # Errors
    /// [`Error::NotFound`]; as [`Access::require`](crate::Access::require);
    /// [`Error::Invalid`] for a bad policy or another project.
    pub async fn update_retention_policy(
        &self,
        who: &Caller,
        registry: &Registry,
        id: i64,
        project_id: Option<i64>,
        policy: Policy,
    ) -> Result<(), Error> {
        let mut record = self
            .retention_for(who, registry, id, Action::Update)
            .await?;
        if project_id.is_some_and(|p| p != record.project_id) {
            return Err(Error::Invalid(format!(
                "retention policy {id} belongs to project {}: it cannot move to another",
                record.project_id
            )));
        }
        let policy = policy.normalized()?;
        record.rules = policy.to_stored()?;
        record.cron = policy.schedule;
        if !registry.meta().update_retention_policy(&record).await? {
            return Err(no_policy(id));
        }
        self.audit(
            who,
            "update",
            "retention",
            &id.to_string(),
            Some(&record.project),
        );
        Ok(())
    }

    /// Delete policy `id` with its history.
    ///
    /// # Errors
    /// [`Error::NotFound`]; as [`Access::require`](crate::Access::require).
    pub async fn delete_retention_policy(
        &self,
        who: &Caller,
        registry: &Registry,
        id: i64,
    ) -> Result<(), Error> {
        let record = self
            .retention_for(who, registry, id, Action::Delete)
            .await?;
        if !registry.meta().delete_retention_policy(id).await? {
            return Err(no_policy(id));
        }
        self.audit(
            who,
            "delete",
            "retention",
            &id.to_string(),
            Some(&record.project),
        );
        Ok(())
    }

    /// Run policy `id` now (`dry_run`: only report).
    ///
    /// # Errors
    /// [`Error::NotFound`]; as [`Access::require`](crate::Access::require);
    /// [`Error::Conflict`] while a run of it is queued or running.
    pub async fn run_retention(
        &self,
        who: &Caller,
        registry: &Registry,
        id: i64,
        dry_run: bool,
    ) -> Result<RetentionExecution, Error> {
        let record = self
            .retention_for(who, registry, id, Action::Operate)
            .await?;
        let run = registry.start_retention(&record, "manual", dry_run).await?;
        self.audit(
            who,
            "run",
            "retention",
            &id.to_string(),
            Some(&record.project),
        );
        Ok(run)
    }

    /// The runs of policy `id`, newest first.
    ///
    /// # Errors
    /// [`Error::NotFound`]; as [`Access::require`](crate::Access::require).
    pub async fn retention_executions(
        &self,
        who: &Caller,
        registry: &Registry,
        id: i64,
        paging: Paging,
    ) -> Result<Listing<RetentionExecution>, Error> {
        self.retention_for(who, registry, id, Action::List).await?;
        Ok(registry
            .meta()
            .list_retention_executions(id, paging)
            .await?)
    }

    /// Run `eid` of policy `id`.
    ///
    /// # Errors
    /// [`Error::NotFound`]; as [`Access::require`](crate::Access::require).
    pub async fn retention_execution(
        &self,
        who: &Caller,
        registry: &Registry,
        id: i64,
        eid: i64,
    ) -> Result<RetentionExecution, Error> {
        self.retention_run_for(who, registry, id, eid, Action::Read)
            .await
    }

    /// Ask run `eid` of policy `id` to stop; it keeps what it did.
    ///
    /// # Errors
    /// [`Error::NotFound`]; as [`Access::require`](crate::Access::require);
    /// [`Error::Conflict`] if it has ended.
    pub async fn stop_retention(
        &self,
        who: &Caller,
        registry: &Registry,
        id: i64,
        eid: i64,
    ) -> Result<RetentionExecution, Error> {
        let run = self
            .retention_run_for(who, registry, id, eid, Action::Operate)
            .await?;
        let project = run.project.clone();
        let run = registry.stop_retention(run).await?;
        self.audit(
            who,
            "stop",
            "retention",
            &format!("{id}/{eid}"),
            Some(&project),
        );
        Ok(run)
    }

    /// The tasks (one per repository) of run `eid` of policy `id`, without their items.
    ///
    /// # Errors
    /// [`Error::NotFound`]; as [`Access::require`](crate::Access::require).
    pub async fn retention_tasks(
        &self,
        who: &Caller,
        registry: &Registry,
        id: i64,
        eid: i64,
        paging: Paging,
    ) -> Result<Listing<RetentionTask>, Error> {
        self.retention_run_for(who, registry, id, eid, Action::List)
            .await?;
        Ok(registry.meta().retention_tasks(eid, paging).await?)
    }

    /// The log of task `tid` of run `eid` of policy `id`: every artifact of its repository,
    /// what became of it and why, as a text table.
    ///
    /// # Errors
    /// [`Error::NotFound`]; as [`Access::require`](crate::Access::require).
    pub async fn retention_task_log(
        &self,
        who: &Caller,
        registry: &Registry,
        id: i64,
        eid: i64,
        tid: i64,
    ) -> Result<String, Error> {
        let run = self
            .retention_run_for(who, registry, id, eid, Action::Read)
            .await?;
        let task = registry
            .meta()
            .retention_task(tid)
            .await?
            .filter(|t| t.execution_id == eid)
            .ok_or_else(|| Error::NotFound(format!("retention run {eid} has no task {tid}")))?;
        report::task_log(&run, &task)
    }
}
