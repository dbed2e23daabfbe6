//! Who may do what: principals, the role table, the Docker token service, and the checks
//! every service makes first.
//!
//! Two kinds of caller reach the services:
//! - On `/v2`, an [`Actor`] carries what its bearer token grants (per repository: pull,
//!   push, delete); checking it needs no database. The token service ([`Access::grant`])
//!   computed those grants from the role table when it issued the token, as the
//!   intersection of what was asked and what is allowed.
//! - On the management API, a [`Principal`] (user, robot) is checked against the role table
//!   and the project's membership on each request ([`Access::require`]).

mod audit;
pub mod manage;
pub mod oidc;
pub mod password;
pub mod rbac;
pub mod robot;
pub mod token;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_meta::{
    AccessStore, MetaError, NewProject, NewUser, Project, ProjectRole, RobotLevel, UserId,
};
use berth_oci::RepoName;

pub use audit::{AuditLog, Batcher, PruneAudit};
pub use berth_oci::scope::{self, RepoActions, Scope};
pub use rbac::{Action, Permission, Resource};
pub use robot::RobotPermission;
pub use token::{AccessEntry, Claims, TokenKeys};

use crate::Error;

/// The prefix of robot account names, as in Harbor (`robot$ci`, `robot$team-a+ci`).
pub const ROBOT_PREFIX: &str = "robot$";

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Nobody signed in.
    Anonymous,
    /// A local user.
    User {
        /// Its id.
        id: UserId,
        /// Its name.
        name: String,
        /// Whether it is a system administrator.
        sysadmin: bool,
    },
    /// A robot account.
    Robot {
        /// Its id.
        id: i64,
        /// Its full name (`robot$...`).
        name: String,
        /// System or project level.
        level: RobotLevel,
        /// What it may do, per project.
        permissions: Arc<Vec<RobotPermission>>,
    },
    /// A CI job that presented an OIDC identity token; what it may do comes from the
    /// configured rules that matched its claims.
    Oidc {
        /// `issuer#subject`.
        subject: String,
        /// What it may do, per project (robot-style).
        permissions: Arc<Vec<RobotPermission>>,
    },
    /// Berth itself (background jobs), or anyone when access control is off.
    System,
}

impl Principal {
    /// The name the audit log and tokens show.
    pub fn name(&self) -> &str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::User { name, .. } | Principal::Robot { name, .. } => name,
            Principal::Oidc { subject, .. } => subject,
            Principal::System => "system",
        }
    }

    /// A reference to the principal that a token carries, so each request can check that it
    /// still exists and is enabled.
    pub fn reference(&self) -> String {
        match self {
            Principal::Anonymous => "anonymous".into(),
            Principal::User { id, .. } => format!("user:{id}"),
            Principal::Robot { id, .. } => format!("robot:{id}"),
            Principal::Oidc { subject, .. } => format!("oidc:{subject}"),
            Principal::System => "system".into(),
        }
    }

    /// Whether it may do anything anywhere.
    pub fn is_sysadmin(&self) -> bool {
        matches!(
            self,
            Principal::System | Principal::User { sysadmin: true, .. }
        )
    }

    /// Refuse unless a system administrator.
    ///
    /// # Errors
    /// [`Error::Unauthorized`] for an anonymous caller, [`Error::Denied`] for anyone else.
    pub fn require_sysadmin(&self) -> Result<(), Error> {
        match self {
            p if p.is_sysadmin() => Ok(()),
            Principal::Anonymous => Err(Error::Unauthorized("sign in first".into())),
            _ => Err(Error::Denied(
                "only a system administrator may do this".into(),
            )),
        }
    }
}

#[derive(Debug, Clone)]
enum Grants {
    All,
    Token(Arc<Vec<Scope>>),
}

/// A caller of the registry service, with what it may do there.
#[derive(Debug, Clone)]
pub struct Actor {
    principal: Principal,
    grants: Grants,
    source: Option<IpAddr>,
}

impl Actor {
    /// Berth itself, or anyone when access control is off: may do everything.
    pub fn system() -> Self {
        Self {
            principal: Principal::System,
            grants: Grants::All,
            source: None,
        }
    }

    /// A caller with what its token grants.
    pub fn with_grants(principal: Principal, scopes: Vec<Scope>, source: Option<IpAddr>) -> Self {
        Self {
            principal,
            grants: Grants::Token(Arc::new(scopes)),
            source,
        }
    }

    /// A caller with no credentials and no grants.
    pub fn anonymous(source: Option<IpAddr>) -> Self {
        Self::with_grants(Principal::Anonymous, Vec::new(), source)
    }

    /// Who it is.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// Where the request came from.
    pub fn source(&self) -> Option<IpAddr> {
        self.source
    }

    /// The same caller seen from `source`.
    #[must_use]
    pub fn from_source(mut self, source: Option<IpAddr>) -> Self {
        self.source = source;
        self
    }

    /// What it may do on `repo`.
    pub fn repo_actions(&self, repo: &RepoName) -> RepoActions {
        match &self.grants {
            Grants::All => RepoActions::ALL,
            Grants::Token(scopes) => scopes
                .iter()
                .filter_map(|s| match s {
                    Scope::Repository { name, actions } if name == repo => Some(*actions),
                    _ => None,
                })
                .fold(RepoActions::NONE, RepoActions::union),
        }
    }

    /// Refuse unless it may do all of `actions` on `repo`: the first line of every registry
    /// operation.
    ///
    /// # Errors
    /// [`Error::Unauthorized`]: on `/v2` a missing grant is answered with a challenge for the
    /// scope, so a client fetches a token for it (the token service then grants what the
    /// caller's roles allow).
    pub fn require(&self, repo: &RepoName, actions: RepoActions) -> Result<(), Error> {
        if self.repo_actions(repo).contains(actions) {
            Ok(())
        } else {
            Err(Error::Unauthorized(format!(
                "access to repository {repo} ({}) is not granted",
                actions.names().join(",")
            )))
        }
    }

    /// Whether it may list the catalog at all (what it lists is filtered further).
    pub fn may_list_catalog(&self) -> bool {
        match &self.grants {
            Grants::All => true,
            Grants::Token(scopes) => scopes.contains(&Scope::Catalog),
        }
    }

    /// Whether it may do everything (no filtering needed).
    pub fn is_unrestricted(&self) -> bool {
        matches!(self.grants, Grants::All)
    }
}

/// How the token service is set up.
#[derive(Debug, Clone)]
pub struct AccessSettings {
    /// The `iss` of the tokens it issues.
    pub issuer: String,
    /// The service name clients ask tokens for (the `service` parameter and `aud`).
    pub service: String,
    /// How long a token lasts.
    pub token_ttl: Duration,
    /// Failed logins per user or address before further attempts are refused for
    /// `lockout`.
    pub max_failed_logins: u32,
    /// How long too many failures lock a user or address out.
    pub lockout: Duration,
}

impl Default for AccessSettings {
    fn default() -> Self {
        Self {
            issuer: "berth".into(),
            service: "berth".into(),
            token_ttl: Duration::from_secs(30 * 60),
            max_failed_logins: 10,
            lockout: Duration::from_secs(5 * 60),
        }
    }
}

/// A token issued by the token service.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The JWT.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// When it was issued, seconds since the epoch.
    pub issued_at: u64,
    /// What it grants.
    pub granted: Vec<Scope>,
}

/// How long a token's principal is trusted to still exist and be enabled without asking the
/// store again. A deleted user or disabled robot on this instance is forgotten at once.
const PRINCIPAL_CACHE_TTL: Duration = Duration::from_secs(5);

/// The access service: logins, tokens, and the role checks of the management API.
pub struct Access {
    store: Arc<dyn AccessStore>,
    keys: TokenKeys,
    settings: AccessSettings,
    limiter: password::LoginLimiter,
    verified: password::VerifiedSecrets,
    principals: Mutex<HashMap<String, (Principal, Instant)>>,
    audit: AuditLog,
    oidc: Option<Arc<oidc::OidcVerifier>>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The settings key under which the generated token key is kept.
const TOKEN_KEY_SETTING: &str = "token.signing_key";

/// The settings key set once [`Access::bootstrap`] has run.
const BOOTSTRAPPED_SETTING: &str = "bootstrap.done";

/// Now, in milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The project a repository belongs to: its first path segment.
pub fn project_of(repo: &RepoName) -> &str {
    let s = repo.as_str();
    s.split_once('/').map_or(s, |(p, _)| p)
}

impl Access {
    /// The access service over `store`. Signs with the key in `key_pem` if given, else with
    /// the key kept in the store's settings (generated on the first start of any instance).
    ///
    /// # Errors
    /// If the key cannot be read or stored.
    pub async fn new(
        store: Arc<dyn AccessStore>,
        settings: AccessSettings,
        key_pem: Option<&[u8]>,
        audit: AuditLog,
    ) -> Result<Self, Error> {
        let keys = match key_pem {
            Some(pem) => TokenKeys::from_pem(pem)?,
            // Generated (and raced for, in a fleet) only when none is stored yet.
            None => match store.setting(TOKEN_KEY_SETTING).await? {
                Some(stored) => TokenKeys::from_stored(&stored)?,
                None => {
                    let fresh = TokenKeys::generate()?;
                    let stored = store.setting_or_insert(TOKEN_KEY_SETTING, &fresh).await?;
                    TokenKeys::from_stored(&stored)?
                }
            },
        };
        Ok(Self {
            limiter: password::LoginLimiter::new(settings.max_failed_logins, settings.lockout),
            verified: password::VerifiedSecrets::new(password::VERIFIED_TTL)?,
            store,
            keys,
            settings,
            principals: Mutex::new(HashMap::new()),
            audit,
            oidc: None,
        })
    }

    /// Accept OIDC identity tokens checked by `verifier` as logins.
    #[must_use]
    pub fn with_oidc(mut self, verifier: oidc::OidcVerifier) -> Self {
        self.oidc = Some(Arc::new(verifier));
        self
    }

    /// The store behind it.
    pub fn store(&self) -> &Arc<dyn AccessStore> {
        &self.store
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The settings.
    pub fn settings(&self) -> &AccessSettings {
        &self.settings
    }

    /// On the first start of a registry (or fleet): create the system administrator `admin`
    /// if there is none, with `password` or a generated one (returned, to be shown once),
    /// and the public project `library`. Once done it is not done again, so an `admin` or
    /// `library` deleted later stays deleted.
    ///
    /// # Errors
    /// If `password` is too weak, or the store fails.
    pub async fn bootstrap(&self, password: Option<&str>) -> Result<Option<String>, Error> {
        if self.store.setting(BOOTSTRAPPED_SETTING).await?.is_some() {
            return Ok(None);
        }
        let mut generated = None;
        if self.store.user_by_name("admin").await?.is_none() {
            let pw = match password {
                Some(p) => {
                    password::check_strength(p)?;
                    p.to_owned()
                }
                None => {
                    let p = password::generate()?;
                    generated = Some(p.clone());
                    p
                }
            };
            let user = NewUser {
                username: "admin".into(),
                email: String::new(),
                realname: "system administrator".into(),
                comment: "created on first start".into(),
                password_hash: password::hash_off_thread(pw).await?,
                sysadmin: true,
            };
            match self.store.create_user(&user).await {
                // Another instance of a fleet made it first: keep theirs.
                Ok(_) | Err(MetaError::AlreadyExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if self.store.project_by_name("library").await?.is_none() {
            let lib = NewProject {
                name: "library".into(),
                public: true,
                owner: None,
            };
            match self.store.create_project(&lib).await {
                Ok(_) | Err(MetaError::AlreadyExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.store
            .setting_or_insert(BOOTSTRAPPED_SETTING, "1")
            .await?;
        Ok(generated)
    }

    /// Check a user name and password (or robot name and secret, or `oidc` and an identity
    /// token). Failed attempts are counted per name and per address (identity tokens: per
    /// address) and, past the limit, refused for a while; every attempt is audited, a
    /// successful one under the name of who signed in.
    ///
    /// # Errors
    /// [`Error::Unauthorized`] for wrong credentials; [`Error::TooManyRequests`] when locked
    /// out.
    pub async fn login(
        &self,
        username: &str,
        secret: &str,
        source: Option<IpAddr>,
    ) -> Result<Principal, Error> {
        self.check_login(username, secret, source, true).await
    }

    /// [`Access::login`] for credentials sent with every request (basic auth on `/v2` or the
    /// management API): failures are audited and limited the same way, successes are not
    /// audited (they are requests, not sign-ins; the request itself is audited where it
    /// changes something).
    ///
    /// # Errors
    /// As [`Access::login`].
    pub async fn authenticate(
        &self,
        username: &str,
        secret: &str,
        source: Option<IpAddr>,
    ) -> Result<Principal, Error> {
        self.check_login(username, secret, source, false).await
    }

    async fn check_login(
        &self,
        username: &str,
        secret: &str,
        source: Option<IpAddr>,
        audit_success: bool,
    ) -> Result<Principal, Error> {
        let user_key = format!("user:{username}");
        let ip_key = source.map(|ip| format!("ip:{ip}"));
        // Every keyless login shares the user name `oidc`, and an identity token has no
        // password to guess: a lockout under that name would let anyone shut every CI job
        // out with a few bad tokens. Those failures count per address only.
        let shared = self.oidc.as_ref().is_some_and(|o| username == o.username());
        let keys: Vec<&str> = (!shared)
            .then_some(user_key.as_str())
            .into_iter()
            .chain(ip_key.as_deref())
            .collect();
        self.limiter.check(&keys)?;
        let outcome = self.check_credentials(username, secret).await;
        let ok = outcome.as_ref().is_ok_and(Option::is_some);
        if !ok || audit_success {
            // Who signed in: for a keyless login the identity (`issuer#subject`), not the
            // user name `oidc` that every CI job shares.
            let who = match &outcome {
                Ok(Some(p)) => p.name(),
                _ => "anonymous",
            };
            self.audit
                .record(who, "login", "user", username, None, source, ok);
        }
        match outcome {
            Ok(Some(p)) => {
                self.limiter.succeeded(&keys);
                Ok(p)
            }
            Ok(None) => {
                self.limiter.failed(&keys);
                Err(Error::Unauthorized("invalid user name or password".into()))
            }
            Err(e) => Err(e),
        }
    }

    async fn check_credentials(
        &self,
        username: &str,
        secret: &str,
    ) -> Result<Option<Principal>, Error> {
        if let Some(oidc) = &self.oidc {
            if username == oidc.username() {
                return Ok(oidc.verify(secret).await.ok());
            }
        }
        if let Some(robot_name) = username.strip_prefix(ROBOT_PREFIX) {
            return self.check_robot(robot_name, secret).await;
        }
        let user = self.store.user_by_name(username).await?;
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        let ok = self.verified.verify(secret, hash).await?;
        Ok(user.filter(|_| ok).map(|u| Principal::User {
            id: u.id,
            name: u.username,
            sysadmin: u.sysadmin,
        }))
    }

    async fn robot_by_full_name(&self, name: &str) -> Result<Option<berth_meta::Robot>, Error> {
        let found = match name.split_once('+') {
            Some((project, robot)) => match self.store.project_by_name(project).await? {
                Some(p) => {
                    self.store
                        .robot_by_name(RobotLevel::Project(p.id), robot)
                        .await?
                }
                None => None,
            },
            None => self.store.robot_by_name(RobotLevel::System, name).await?,
        };
        Ok(found)
    }

    async fn check_robot(&self, name: &str, secret: &str) -> Result<Option<Principal>, Error> {
        let robot = self.robot_by_full_name(name).await?;
        let hash = robot.as_ref().map(|r| r.secret_hash.clone());
        let ok = self.verified.verify(secret, hash).await?;
        let Some(robot) = robot.filter(|_| ok) else {
            return Ok(None);
        };
        let full = format!("{ROBOT_PREFIX}{name}");
        Ok(robot::principal(&robot, full, unix_ms()))
    }

    /// The actions `principal` may do on `repo`, by the role table, its memberships and the
    /// project's visibility (for a robot or OIDC caller: its permissions).
    ///
    /// # Errors
    /// Store errors.
    pub async fn repo_actions(
        &self,
        principal: &Principal,
        repo: &RepoName,
    ) -> Result<RepoActions, Error> {
        let project_name = project_of(repo);
        let project = self.store.project_by_name(project_name).await?;
        let perms = self
            .permissions(principal, project_name, project.as_ref())
            .await?;
        let may = |r, a| perms.iter().any(|p| *p == Permission::new(r, a));
        let mut actions = RepoActions::NONE;
        if may(Resource::Repository, Action::Pull) {
            actions = actions.union(RepoActions::PULL);
        }
        if may(Resource::Repository, Action::Push) {
            actions = actions.union(RepoActions::PUSH);
        }
        if may(Resource::Artifact, Action::Delete) {
            actions = actions.union(RepoActions::DELETE);
        }
        Ok(actions)
    }

    /// Every permission `principal` holds in project `name` (`project` is its record, if it
    /// exists: a system administrator holds every permission even in a project that does
    /// not exist yet, which lets it push a new project into being).
    ///
    /// # Errors
    /// Store errors.
    pub async fn permissions(
        &self,
        principal: &Principal,
        name: &str,
        project: Option<&Project>,
    ) -> Result<Vec<Permission>, Error> {
        let all = || {
            Resource::ALL
                .iter()
                .flat_map(|r| Action::ALL.iter().map(|a| Permission::new(*r, *a)))
                .collect::<Vec<_>>()
        };
        if principal.is_sysadmin() {
            return Ok(all());
        }
        let Some(project) = project else {
            return Ok(Vec::new());
        };
        let public = project.public;
        let from_table = |roles: &[ProjectRole]| {
            all()
                .into_iter()
                .filter(|p| rbac::allows(roles, public, *p))
                .collect::<Vec<_>>()
        };
        Ok(match principal {
            Principal::Anonymous => from_table(&[]),
            Principal::User { id, .. } => from_table(&self.store.roles_of(project.id, *id).await?),
            Principal::Robot { permissions, .. } | Principal::Oidc { permissions, .. } => {
                let mut perms = robot::permissions_in(permissions, name);
                if public {
                    perms.extend_from_slice(rbac::PUBLIC_PERMISSIONS);
                }
                perms.sort();
                perms.dedup();
                perms
            }
            Principal::System => all(),
        })
    }

    /// Refuse unless `principal` holds `perm` in project `name`; returns the project.
    ///
    /// # Errors
    /// [`Error::NotFound`] if the project does not exist or is invisible to the caller (so
    /// private project names do not leak), [`Error::Unauthorized`] for an anonymous caller,
    /// [`Error::Denied`] otherwise.
    pub async fn require(
        &self,
        principal: &Principal,
        name: &str,
        perm: Permission,
    ) -> Result<Project, Error> {
        let project = self.store.project_by_name(name).await?;
        let perms = self.permissions(principal, name, project.as_ref()).await?;
        let Some(project) = project else {
            return Err(Error::NotFound(format!("project {name} does not exist")));
        };
        if perms.contains(&perm) {
            return Ok(project);
        }
        let sees = perms.contains(&Permission::new(Resource::Project, Action::Read));
        Err(match principal {
            _ if !sees => Error::NotFound(format!("project {name} does not exist")),
            Principal::Anonymous => Error::Unauthorized("sign in first".into()),
            _ => Error::Denied(format!("{perm} in project {name} is not allowed")),
        })
    }

    /// What of `asked` `principal` may have: the token service's answer.
    ///
    /// # Errors
    /// Store errors.
    pub async fn grant(&self, principal: &Principal, asked: &[Scope]) -> Result<Vec<Scope>, Error> {
        let mut granted = Vec::new();
        for scope in asked {
            match scope {
                Scope::Repository { name, actions } => {
                    let allowed = self
                        .repo_actions(principal, name)
                        .await?
                        .intersect(*actions);
                    if !allowed.is_empty() {
                        granted.push(Scope::Repository {
                            name: name.clone(),
                            actions: allowed,
                        });
                    }
                }
                // Anyone may ask; the listing shows only what the caller may see.
                Scope::Catalog => granted.push(Scope::Catalog),
            }
        }
        Ok(granted)
    }

    /// Issue a token for `principal` granting what it may have of `asked`.
    ///
    /// # Errors
    /// Store errors; signing errors.
    pub async fn issue_token(
        &self,
        principal: &Principal,
        asked: &[Scope],
    ) -> Result<IssuedToken, Error> {
        let granted = self.grant(principal, asked).await?;
        let now = token::now_secs();
        let ttl = self.settings.token_ttl.as_secs();
        let claims = Claims {
            iss: self.settings.issuer.clone(),
            sub: principal.name().to_owned(),
            aud: self.settings.service.clone(),
            exp: now + ttl,
            nbf: now.saturating_sub(1),
            iat: now,
            jti: token::random_hex(16)?,
            access: granted.iter().map(AccessEntry::from_scope).collect(),
            principal: Some(principal.reference()),
        };
        self.remember(principal);
        Ok(IssuedToken {
            token: self.keys.sign(&claims)?,
            expires_in: ttl,
            issued_at: now,
            granted,
        })
    }

    fn remember(&self, principal: &Principal) {
        if matches!(principal, Principal::User { .. } | Principal::Robot { .. }) {
            let mut cache = self.principals.lock().unwrap_or_else(|e| e.into_inner());
            cache.insert(principal.reference(), (principal.clone(), Instant::now()));
        }
    }

    /// Forget what is cached about `reference` (after deleting a user, disabling a robot...).
    pub fn forget(&self, reference: &str) {
        let mut cache = self.principals.lock().unwrap_or_else(|e| e.into_inner());
        cache.remove(reference);
    }

    /// Look a token's principal up again: users and robots must still exist (and robots be
    /// enabled and unexpired) for their tokens to work.
    async fn current_principal(&self, claims: &Claims) -> Result<Principal, Error> {
        let reference = claims.principal.as_deref().unwrap_or("anonymous");
        {
            let cache = self.principals.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((p, at)) = cache.get(reference) {
                if at.elapsed() < PRINCIPAL_CACHE_TTL {
                    return Ok(p.clone());
                }
            }
        }
        let gone =
            || Error::Unauthorized("the token's account no longer exists or is disabled".into());
        let principal = match reference.split_once(':') {
            None if reference == "anonymous" => return Ok(Principal::Anonymous),
            Some(("user", id)) => {
                let id: i64 = id.parse().map_err(|_| gone())?;
                let u = self.store.user(id).await?.ok_or_else(gone)?;
                Principal::User {
                    id: u.id,
                    name: u.username,
                    sysadmin: u.sysadmin,
                }
            }
            Some(("robot", id)) => {
                let id: i64 = id.parse().map_err(|_| gone())?;
                let r = self.store.robot(id).await?.ok_or_else(gone)?;
                let project = match r.level {
                    RobotLevel::Project(p) => self.store.project(p).await?.map(|p| p.name),
                    RobotLevel::System => None,
                };
                let full = robot::full_name(&r, project.as_deref());
                robot::principal(&r, full, unix_ms()).ok_or_else(gone)?
            }
            Some(("oidc", subject)) => {
                // Nothing is stored for a keyless login: the token's grants are all it has.
                return Ok(Principal::Oidc {
                    subject: subject.to_owned(),
                    permissions: Arc::new(Vec::new()),
                });
            }
            _ => return Err(gone()),
        };
        self.remember(&principal);
        Ok(principal)
    }

    /// The caller a bearer token stands for on `/v2`.
    ///
    /// # Errors
    /// [`Error::Unauthorized`] if the token is not valid, or its account is gone.
    pub async fn actor_from_token(
        &self,
        token: &str,
        source: Option<IpAddr>,
    ) -> Result<Actor, Error> {
        let claims = self
            .keys
            .verify(token, &self.settings.issuer, &self.settings.service)?;
        let principal = self.current_principal(&claims).await?;
        Ok(Actor::with_grants(principal, claims.scopes(), source))
    }

    /// Whether `principal` may see project `project` (for filtering listings).
    ///
    /// # Errors
    /// Store errors.
    pub async fn sees_project(&self, principal: &Principal, project: &str) -> Result<bool, Error> {
        let record = self.store.project_by_name(project).await?;
        let perms = self
            .permissions(principal, project, record.as_ref())
            .await?;
        Ok(
            record.is_some()
                && perms.contains(&Permission::new(Resource::Repository, Action::List)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_check_their_grants() {
        let repo: RepoName = "team-a/app".parse().expect("valid");
        let other: RepoName = "team-b/app".parse().expect("valid");
        let a = Actor::with_grants(
            Principal::Anonymous,
            vec![Scope::Repository {
                name: repo.clone(),
                actions: RepoActions::PULL,
            }],
            None,
        );
        assert!(a.require(&repo, RepoActions::PULL).is_ok());
        assert!(a.require(&repo, RepoActions::PUSH).is_err());
        assert!(a.require(&other, RepoActions::PULL).is_err());
        assert!(!a.may_list_catalog());
        assert!(Actor::system().require(&other, RepoActions::ALL).is_ok());
        assert_eq!(project_of(&repo), "team-a");
        assert_eq!(project_of(&"solo".parse().expect("valid")), "solo");
    }
}
