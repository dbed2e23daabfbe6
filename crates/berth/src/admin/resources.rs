//! The subcommands of `berth admin`, one function per resource.

use anyhow::{anyhow, bail};
use berth_meta::ProjectRole;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use super::client::{seg, Api};
use super::output::{done, print_one, print_rows, Output};

const PROJECT_COLUMNS: &[(&str, &str)] = &[
    ("ID", "project_id"),
    ("NAME", "name"),
    ("PUBLIC", "metadata.public"),
    ("REPOS", "repo_count"),
    ("CREATED", "creation_time"),
];

#[derive(Subcommand, Debug)]
pub enum ProjectCmd {
    /// List the projects you may see
    List {
        /// Only names containing this
        #[arg(long)]
        name: Option<String>,
    },
    /// Create a project
    Create {
        name: String,
        /// Anyone may pull from it
        #[arg(long)]
        public: bool,
    },
    /// Show a project
    Show { name: String },
    /// Delete an empty project
    Delete { name: String },
}

pub async fn projects(api: &Api, out: Output, cmd: ProjectCmd) -> anyhow::Result<()> {
    match cmd {
        ProjectCmd::List { name } => {
            let q: Vec<_> = name.map(|n| ("name", n)).into_iter().collect();
            let rows = api.get_all("/projects", &q).await?;
            print_rows(out, &rows, PROJECT_COLUMNS);
        }
        ProjectCmd::Create { name, public } => {
            let body = json!({"project_name": name, "metadata": {"public": public.to_string()}});
            api.call(Method::POST, "/projects", &[], Some(body)).await?;
            done(
                out,
                &format!("project {name} created"),
                json!({"name": name}),
            );
        }
        ProjectCmd::Show { name } => {
            let r = api.get(&project_path(&name), &[]).await?;
            print_one(out, &r.body, PROJECT_COLUMNS);
        }
        ProjectCmd::Delete { name } => {
            api.call(Method::DELETE, &project_path(&name), &[], None)
                .await?;
            done(
                out,
                &format!("project {name} deleted"),
                json!({"name": name}),
            );
        }
    }
    Ok(())
}

/// A project by name (the client sends `X-Is-Resource-Name: true`, so a numeric name is
/// read as a name too).
fn project_path(name: &str) -> String {
    format!("/projects/{}", seg(name))
}

const USER_COLUMNS: &[(&str, &str)] = &[
    ("ID", "user_id"),
    ("USERNAME", "username"),
    ("EMAIL", "email"),
    ("ADMIN", "sysadmin_flag"),
    ("CREATED", "creation_time"),
];

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// List users (system administrators)
    List {
        /// Only names containing this
        #[arg(long)]
        name: Option<String>,
    },
    /// Create a user
    Create {
        /// The user's name
        #[arg(id = "user", value_name = "USERNAME")]
        username: String,
        /// The new user's password
        #[arg(long, env = "BERTH_NEW_PASSWORD", hide_env_values = true)]
        new_password: String,
        #[arg(long, default_value = "")]
        email: String,
        #[arg(long, default_value = "")]
        realname: String,
    },
    /// Delete a user
    Delete {
        /// The user's name
        #[arg(id = "user", value_name = "USERNAME")]
        username: String,
    },
    /// Change a user's password (your own needs --old-password)
    Passwd {
        /// The user's name
        #[arg(id = "user", value_name = "USERNAME")]
        username: String,
        #[arg(long, env = "BERTH_NEW_PASSWORD", hide_env_values = true)]
        new_password: String,
        #[arg(long)]
        old_password: Option<String>,
    },
    /// Make a user a system administrator (true) or not (false)
    Sysadmin {
        /// The user's name
        #[arg(id = "user", value_name = "USERNAME")]
        username: String,
        #[arg(action = clap::ArgAction::Set)]
        admin: bool,
    },
}

async fn user_id(api: &Api, username: &str) -> anyhow::Result<i64> {
    let rows = api
        .get_all("/users", &[("q", format!("username=~{username}"))])
        .await?;
    rows.iter()
        .find(|u| u["username"] == username)
        .and_then(|u| u["user_id"].as_i64())
        .ok_or_else(|| anyhow!("no user named {username}"))
}

pub async fn users(api: &Api, out: Output, cmd: UserCmd) -> anyhow::Result<()> {
    match cmd {
        UserCmd::List { name } => {
            let q: Vec<_> = name
                .map(|n| ("q", format!("username=~{n}")))
                .into_iter()
                .collect();
            let rows = api.get_all("/users", &q).await?;
            print_rows(out, &rows, USER_COLUMNS);
        }
        UserCmd::Create {
            username,
            new_password,
            email,
            realname,
        } => {
            let body = json!({"username": username, "password": new_password, "email": email, "realname": realname});
            api.call(Method::POST, "/users", &[], Some(body)).await?;
            done(
                out,
                &format!("user {username} created"),
                json!({"username": username}),
            );
        }
        UserCmd::Delete { username } => {
            let id = user_id(api, &username).await?;
            api.call(Method::DELETE, &format!("/users/{id}"), &[], None)
                .await?;
            done(
                out,
                &format!("user {username} deleted"),
                json!({"username": username}),
            );
        }
        UserCmd::Passwd {
            username,
            new_password,
            old_password,
        } => {
            let id = user_id(api, &username).await?;
            let body = json!({"old_password": old_password, "new_password": new_password});
            api.call(
                Method::PUT,
                &format!("/users/{id}/password"),
                &[],
                Some(body),
            )
            .await?;
            done(
                out,
                &format!("password of {username} changed"),
                json!({"username": username}),
            );
        }
        UserCmd::Sysadmin { username, admin } => {
            let id = user_id(api, &username).await?;
            let body = json!({"sysadmin_flag": admin});
            api.call(
                Method::PUT,
                &format!("/users/{id}/sysadmin"),
                &[],
                Some(body),
            )
            .await?;
            done(
                out,
                &format!("{username}: sysadmin = {admin}"),
                json!({"username": username, "sysadmin_flag": admin}),
            );
        }
    }
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum MemberCmd {
    /// List a project's members
    List { project: String },
    /// Add a user or group to a project
    Add {
        project: String,
        /// A user
        #[arg(long, conflicts_with = "group", required_unless_present = "group")]
        user: Option<String>,
        /// A group
        #[arg(long)]
        group: Option<String>,
        /// projectAdmin, maintainer, developer, guest, limitedGuest
        #[arg(long)]
        role: String,
    },
    /// Remove a member (by user or group name)
    Remove { project: String, member: String },
    /// Change a member's role
    SetRole {
        project: String,
        member: String,
        #[arg(long)]
        role: String,
    },
}

fn role_id(name: &str) -> anyhow::Result<i64> {
    ProjectRole::from_name(name)
        .map(ProjectRole::id)
        .ok_or_else(|| {
            anyhow!(
                "unknown role {name:?}: projectAdmin, maintainer, developer, guest, limitedGuest"
            )
        })
}

async fn member_id(api: &Api, project: &str, name: &str) -> anyhow::Result<i64> {
    let path = format!("{}/members", project_path(project));
    let rows = api
        .get_all(&path, &[("entityname", name.to_owned())])
        .await?;
    rows.iter()
        .find(|m| m["entity_name"] == name)
        .and_then(|m| m["id"].as_i64())
        .ok_or_else(|| anyhow!("{name} is not a member of {project}"))
}

pub async fn members(api: &Api, out: Output, cmd: MemberCmd) -> anyhow::Result<()> {
    match cmd {
        MemberCmd::List { project } => {
            let rows = api
                .get_all(&format!("{}/members", project_path(&project)), &[])
                .await?;
            let cols = [
                ("ID", "id"),
                ("NAME", "entity_name"),
                ("TYPE", "entity_type"),
                ("ROLE", "role_name"),
            ];
            print_rows(out, &rows, &cols);
        }
        MemberCmd::Add {
            project,
            user,
            group,
            role,
        } => {
            let mut body = json!({"role_id": role_id(&role)?});
            let who = match (user, group) {
                (Some(u), _) => {
                    body["member_user"] = json!({"username": u});
                    u
                }
                (None, Some(g)) => {
                    body["member_group"] = json!({"group_name": g});
                    g
                }
                (None, None) => bail!("give --user or --group"),
            };
            let path = format!("{}/members", project_path(&project));
            api.call(Method::POST, &path, &[], Some(body)).await?;
            done(
                out,
                &format!("{who} added to {project} as {role}"),
                json!({"member": who, "project": project}),
            );
        }
        MemberCmd::Remove { project, member } => {
            let id = member_id(api, &project, &member).await?;
            let path = format!("{}/members/{id}", project_path(&project));
            api.call(Method::DELETE, &path, &[], None).await?;
            done(
                out,
                &format!("{member} removed from {project}"),
                json!({"member": member, "project": project}),
            );
        }
        MemberCmd::SetRole {
            project,
            member,
            role,
        } => {
            let id = member_id(api, &project, &member).await?;
            let path = format!("{}/members/{id}", project_path(&project));
            let body = json!({"role_id": role_id(&role)?});
            api.call(Method::PUT, &path, &[], Some(body)).await?;
            done(
                out,
                &format!("{member} is now {role} in {project}"),
                json!({"member": member, "project": project}),
            );
        }
    }
    Ok(())
}

const ROBOT_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("NAME", "name"),
    ("LEVEL", "level"),
    ("DISABLED", "disable"),
    ("EXPIRES_AT", "expires_at"),
    ("DESCRIPTION", "description"),
];

#[derive(Subcommand, Debug)]
pub enum RobotCmd {
    /// List robots of a project, or system robots
    List {
        #[arg(long, conflicts_with = "system")]
        project: Option<String>,
        #[arg(long)]
        system: bool,
    },
    /// Create a robot; prints its secret once
    Create {
        name: String,
        /// A robot of this project
        #[arg(long, conflicts_with = "system", required_unless_present = "system")]
        project: Option<String>,
        /// A system robot (with --namespace per permission set; `*` for all projects)
        #[arg(long)]
        system: bool,
        /// Projects a system robot's permissions apply to
        #[arg(long, default_value = "*")]
        namespace: Vec<String>,
        /// Permissions as resource:action, comma separated (repository:pull,repository:push)
        #[arg(long, default_value = "repository:pull")]
        access: String,
        /// Lifetime in days (-1: never expires)
        #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
        duration: i64,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Delete a robot
    Delete { id: i64 },
    /// Give a robot a new secret; prints it once
    Refresh { id: i64 },
    /// Disable a robot
    Disable { id: i64 },
    /// Enable a robot
    Enable { id: i64 },
}

fn access_list(spec: &str) -> anyhow::Result<Vec<Value>> {
    spec.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|pair| {
            let (r, a) = pair
                .trim()
                .split_once(':')
                .ok_or_else(|| anyhow!("permission {pair:?} is not resource:action"))?;
            Ok(json!({"resource": r, "action": a}))
        })
        .collect()
}

pub async fn robots(api: &Api, out: Output, cmd: RobotCmd) -> anyhow::Result<()> {
    match cmd {
        RobotCmd::List { project, system } => {
            let q = match (project, system) {
                (Some(p), _) => {
                    let id = api.get(&project_path(&p), &[]).await?.body["project_id"].clone();
                    format!("Level=project,ProjectID={id}")
                }
                (None, true) => "Level=system".to_owned(),
                (None, false) => String::new(),
            };
            let query: Vec<_> = Some(q)
                .filter(|q| !q.is_empty())
                .map(|q| ("q", q))
                .into_iter()
                .collect();
            let rows = api.get_all("/robots", &query).await?;
            print_rows(out, &rows, ROBOT_COLUMNS);
        }
        RobotCmd::Create {
            name,
            project,
            system,
            namespace,
            access,
            duration,
            description,
        } => {
            let access = access_list(&access)?;
            let (level, namespaces) = match project {
                Some(p) if !system => ("project", vec![p]),
                _ => ("system", namespace),
            };
            let permissions: Vec<Value> = namespaces
                .iter()
                .map(|ns| json!({"kind": "project", "namespace": ns, "access": access}))
                .collect();
            let body = json!({"name": name, "level": level, "duration": duration,
                "description": description, "permissions": permissions});
            let r = api.call(Method::POST, "/robots", &[], Some(body)).await?;
            print_one(
                out,
                &r.body,
                &[
                    ("ID", "id"),
                    ("NAME", "name"),
                    ("SECRET", "secret"),
                    ("EXPIRES_AT", "expires_at"),
                ],
            );
            if out == Output::Table {
                eprintln!("(the secret is shown this once)");
            }
        }
        RobotCmd::Delete { id } => {
            api.call(Method::DELETE, &format!("/robots/{id}"), &[], None)
                .await?;
            done(out, &format!("robot {id} deleted"), json!({"id": id}));
        }
        RobotCmd::Refresh { id } => {
            let r = api
                .call(
                    Method::PATCH,
                    &format!("/robots/{id}"),
                    &[],
                    Some(json!({"secret": ""})),
                )
                .await?;
            print_one(out, &r.body, &[("SECRET", "secret")]);
        }
        RobotCmd::Disable { id } | RobotCmd::Enable { id } => {
            let disable = matches!(cmd, RobotCmd::Disable { .. });
            api.call(
                Method::PUT,
                &format!("/robots/{id}"),
                &[],
                Some(json!({"disable": disable})),
            )
            .await?;
            let word = if disable { "disabled" } else { "enabled" };
            done(
                out,
                &format!("robot {id} {word}"),
                json!({"id": id, "disable": disable}),
            );
        }
    }
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum LogCmd {
    /// List audit events, newest first
    List {
        /// Only this project's events
        #[arg(long)]
        project: Option<String>,
        /// Only this user's (or robot's) events (`--username` is who signs in)
        #[arg(long = "user", id = "filter_user", value_name = "USERNAME")]
        username: Option<String>,
        #[arg(long)]
        operation: Option<String>,
        #[arg(long)]
        resource_type: Option<String>,
        /// Resources containing this
        #[arg(long)]
        resource: Option<String>,
        /// From this time (2006-01-02 15:04:05 or RFC 3339, UTC)
        #[arg(long)]
        from: Option<String>,
        /// Up to this time
        #[arg(long)]
        to: Option<String>,
        #[arg(long, default_value_t = 1)]
        page: u64,
        #[arg(long, default_value_t = 20)]
        page_size: u64,
    },
}

pub async fn logs(api: &Api, out: Output, cmd: LogCmd) -> anyhow::Result<()> {
    let LogCmd::List {
        project,
        username,
        operation,
        resource_type,
        resource,
        from,
        to,
        page,
        page_size,
    } = cmd;
    let mut conds: Vec<String> = [
        ("username", username),
        ("operation", operation),
        ("resource_type", resource_type),
        ("resource", resource.map(|r| format!("~{r}"))),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
    .collect();
    if from.is_some() || to.is_some() {
        conds.push(format!(
            "op_time=[{}~{}]",
            from.unwrap_or_default(),
            to.unwrap_or_default()
        ));
    }
    let mut q = vec![
        ("page", page.to_string()),
        ("page_size", page_size.to_string()),
    ];
    if !conds.is_empty() {
        q.push(("q", conds.join(",")));
    }
    let path = match project {
        Some(p) => format!("{}/logs", project_path(&p)),
        None => "/audit-logs".to_owned(),
    };
    let r = api.get(&path, &q).await?;
    let rows = r.body.as_array().cloned().unwrap_or_default();
    print_rows(
        out,
        &rows,
        &[
            ("TIME", "op_time"),
            ("USER", "username"),
            ("OPERATION", "operation"),
            ("TYPE", "resource_type"),
            ("RESOURCE", "resource"),
            ("PROJECT", "project"),
            ("OK", "success"),
        ],
    );
    if out == Output::Table {
        if let Some(t) = r.total {
            eprintln!("({} of {t})", rows.len());
        }
    }
    Ok(())
}
