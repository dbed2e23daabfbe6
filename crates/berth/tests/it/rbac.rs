//! The RBAC matrix: every kind of caller (anonymous, each project role, a member of another
//! project, a system administrator, a robot holding each single permission, and a typical
//! pull/push robot) times every action on `/v2` and `/api/v2.0`, over HTTP against the real
//! binary, in a private and in a public project.
//!
//! The expected answer of every cell is computed from the role table in the code
//! (`berth_core::access::rbac`): the test fails on any cell where the server allows what the
//! table does not allow, or refuses what it allows, and also checks that the token service
//! grants exactly the table's actions.

use std::collections::BTreeSet;
use std::sync::Arc;

use base64::Engine as _;
use berth_core::access::rbac::{self, Action as A, Permission, Resource as R};
use berth_meta::ProjectRole;
use futures::StreamExt as _;
use reqwest::{Client, Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};

use crate::harness::{image_manifest, sha256, Server, ADMIN_PASSWORD};

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const USER_PASSWORD: &str = "Matrix-Pass-1";

/// Who a caller is, for the expected answers.
#[derive(Debug, Clone)]
enum Kind {
    Anonymous,
    Sysadmin,
    /// A user holding this role in the project under test.
    Member(ProjectRole),
    /// A user who is project admin of another project only.
    Outsider,
    /// A robot of the project under test holding these permissions.
    Robot(Vec<Permission>),
}

/// How a caller authenticates.
#[derive(Debug, Clone)]
enum Auth {
    None,
    /// A browser session: cookie and CSRF token.
    Session {
        cookie: String,
        csrf: String,
    },
    /// HTTP basic, sent with each request (robots).
    Basic {
        user: String,
        secret: String,
    },
}

#[derive(Debug, Clone)]
struct Subject {
    label: String,
    kind: Kind,
    auth: Auth,
    /// The user name and password for the token service, if any.
    login: Option<(String, String)>,
}

/// What a case needs, by the code's tables.
#[derive(Debug, Clone, Copy)]
enum Need {
    /// A project permission in the project under test.
    Perm(Permission),
    /// All these permissions there (making a robot needs `robot:create` and every
    /// permission it hands on: nobody grants more than they hold).
    All(&'static [Permission]),
    /// A project permission in a fresh project the caller is bound to as in the project
    /// under test (members keep their role; robots hold nothing there).
    PermInFresh(Permission),
    /// A cross-repository mount: push on the target and pull on the source.
    Mount,
    /// A system administrator.
    Sysadmin,
    /// Any signed-in user (not a robot).
    User,
}

const fn perm(r: R, a: A) -> Need {
    Need::Perm(Permission::new(r, a))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    V2PullManifest,
    V2PullBlob,
    V2ListTags,
    V2Referrers,
    V2StartUpload,
    V2PushManifest,
    V2DeleteManifest,
    V2DeleteTag,
    V2Catalog,
    V2Mount,
    ProjectGet,
    ProjectUpdate,
    ProjectDelete,
    MembersList,
    MemberGet,
    MemberAdd,
    MemberUpdate,
    MemberDelete,
    ProjectLogs,
    ReposList,
    RepoGet,
    RepoDelete,
    ArtifactsList,
    ArtifactGet,
    ArtifactDelete,
    TagsList,
    TagCreate,
    TagDelete,
    RobotsList,
    RobotGet,
    RobotCreate,
    RobotUpdate,
    RobotDelete,
    UsersList,
    UserCreate,
    GroupCreate,
    ProjectCreate,
}

/// Every case of the matrix with what it needs.
const CASES: &[(Op, Need)] = &[
    (Op::V2PullManifest, perm(R::Repository, A::Pull)),
    (Op::V2PullBlob, perm(R::Repository, A::Pull)),
    (Op::V2ListTags, perm(R::Repository, A::Pull)),
    (Op::V2Referrers, perm(R::Repository, A::Pull)),
    (Op::V2StartUpload, perm(R::Repository, A::Push)),
    (Op::V2PushManifest, perm(R::Repository, A::Push)),
    (Op::V2DeleteManifest, perm(R::Artifact, A::Delete)),
    (Op::V2DeleteTag, perm(R::Artifact, A::Delete)),
    (Op::V2Catalog, perm(R::Repository, A::List)),
    (Op::V2Mount, Need::Mount),
    (Op::ProjectGet, perm(R::Project, A::Read)),
    (Op::ProjectUpdate, perm(R::Project, A::Update)),
    (
        Op::ProjectDelete,
        Need::PermInFresh(Permission::new(R::Project, A::Delete)),
    ),
    (Op::MembersList, perm(R::Member, A::List)),
    (Op::MemberGet, perm(R::Member, A::Read)),
    (Op::MemberAdd, perm(R::Member, A::Create)),
    (Op::MemberUpdate, perm(R::Member, A::Update)),
    (Op::MemberDelete, perm(R::Member, A::Delete)),
    (Op::ProjectLogs, perm(R::Log, A::List)),
    (Op::ReposList, perm(R::Repository, A::List)),
    (Op::RepoGet, perm(R::Repository, A::Read)),
    (Op::RepoDelete, perm(R::Repository, A::Delete)),
    (Op::ArtifactsList, perm(R::Artifact, A::List)),
    (Op::ArtifactGet, perm(R::Artifact, A::Read)),
    (Op::ArtifactDelete, perm(R::Artifact, A::Delete)),
    (Op::TagsList, perm(R::Tag, A::List)),
    (Op::TagCreate, perm(R::Tag, A::Create)),
    (Op::TagDelete, perm(R::Tag, A::Delete)),
    (Op::RobotsList, perm(R::Robot, A::List)),
    (Op::RobotGet, perm(R::Robot, A::Read)),
    (
        Op::RobotCreate,
        Need::All(&[
            Permission::new(R::Robot, A::Create),
            Permission::new(R::Repository, A::Pull),
        ]),
    ),
    (Op::RobotUpdate, perm(R::Robot, A::Update)),
    (Op::RobotDelete, perm(R::Robot, A::Delete)),
    (Op::UsersList, Need::Sysadmin),
    (Op::UserCreate, Need::Sysadmin),
    (Op::GroupCreate, Need::Sysadmin),
    (Op::ProjectCreate, Need::User),
];

/// Whether the table lets `kind` hold `p` in a project (`bound`: the caller's membership or
/// robot permissions apply there).
fn table_allows(kind: &Kind, public: bool, bound: bool, p: Permission) -> bool {
    match kind {
        Kind::Sysadmin => true,
        Kind::Member(role) if bound => rbac::allows(&[*role], public, p),
        Kind::Robot(perms) if bound => perms.contains(&p) || rbac::allows(&[], public, p),
        _ => rbac::allows(&[], public, p),
    }
}

/// The answer the table expects: allowed or not (a mount: `Some(true)` mounted,
/// `Some(false)` an ordinary upload instead, `None` refused).
fn expected(kind: &Kind, public: bool, need: Need) -> Option<bool> {
    let has = |p| table_allows(kind, public, true, p);
    match need {
        Need::Perm(p) => has(p).then_some(true),
        Need::All(ps) => ps.iter().all(|p| has(*p)).then_some(true),
        Need::PermInFresh(p) => {
            table_allows(kind, public, matches!(kind, Kind::Member(_)), p).then_some(true)
        }
        Need::Mount => has(Permission::new(R::Repository, A::Push))
            .then(|| has(Permission::new(R::Repository, A::Pull))),
        Need::Sysadmin => matches!(kind, Kind::Sysadmin).then_some(true),
        Need::User => {
            matches!(kind, Kind::Sysadmin | Kind::Member(_) | Kind::Outsider).then_some(true)
        }
    }
}

/// The project under test and what the fixture made in it.
struct World {
    s: Server,
    http: Client,
    admin: Auth,
    project: String,
    project_id: i64,
    public: bool,
    /// The image `project/app:v1`: its config blob and manifest.
    config: String,
    manifest: Vec<u8>,
    digest: String,
    /// A guest member whose role the update case sets.
    target_member: i64,
    /// A robot of the project the read and update cases use.
    keep_robot: i64,
}

impl World {
    fn url(&self, path: &str) -> String {
        self.s.url(path)
    }

    fn req(&self, auth: &Auth, method: Method, path: &str) -> RequestBuilder {
        let b = self.http.request(method, self.url(path));
        match auth {
            Auth::None => b,
            Auth::Session { cookie, csrf } => b
                .header("cookie", cookie)
                .header("x-harbor-csrf-token", csrf),
            Auth::Basic { user, secret } => b.basic_auth(user, Some(secret)),
        }
    }

    /// An API call; returns the status and the body.
    async fn api(
        &self,
        auth: &Auth,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, String) {
        let mut b = self.req(auth, method, &format!("/api/v2.0{path}"));
        if let Some(v) = body {
            b = b.json(&v);
        }
        let r = b.send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    }

    /// An API call as the administrator that must succeed; returns the JSON body and the id
    /// at the end of `Location`, if any.
    async fn admin_api(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (Value, Option<i64>) {
        let mut b = self.req(&self.admin, method, &format!("/api/v2.0{path}"));
        if let Some(v) = body {
            b = b.json(&v);
        }
        let r = b.send().await.unwrap();
        let status = r.status();
        let id = r
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .and_then(|l| l.rsplit('/').next())
            .and_then(|id| id.parse().ok());
        let text = r.text().await.unwrap();
        assert!(status.is_success(), "admin {path}: {status} {text}");
        (serde_json::from_str(&text).unwrap_or(Value::Null), id)
    }

    /// Push through /v2 as the administrator (basic auth).
    async fn admin_v2(&self, method: Method, path: &str, ct: &str, body: Vec<u8>) {
        let r = self
            .http
            .request(method, self.url(path))
            .basic_auth("admin", Some(ADMIN_PASSWORD))
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert!(status.is_success(), "{path}: {status} {:?}", r.text().await);
    }

    /// Push an image whose config holds `label` (so its digest is its own) to `repo:tag`;
    /// returns the manifest's digest.
    async fn push_image(&self, repo: &str, tag: &str, label: &str) -> String {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","label":"{label}"}}"#);
        let cd = sha256(config.as_bytes());
        self.admin_v2(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/?digest={cd}"),
            "application/octet-stream",
            config.clone().into_bytes(),
        )
        .await;
        let m = image_manifest(&cd, config.len(), &[], None);
        self.admin_v2(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{tag}"),
            MANIFEST_TYPE,
            m.clone(),
        )
        .await;
        sha256(&m)
    }

    /// Put tag `tag` on the image `app:v1`.
    async fn tag_v1(&self, tag: &str) {
        self.admin_v2(
            Method::PUT,
            &format!("/v2/{}/app/manifests/{tag}", self.project),
            MANIFEST_TYPE,
            self.manifest.clone(),
        )
        .await;
    }

    async fn user(&self, name: &str) {
        self.admin_api(
            Method::POST,
            "/users",
            Some(json!({"username": name, "password": USER_PASSWORD,
                "email": format!("{name}@example.com"), "realname": name})),
        )
        .await;
    }

    /// Add user `name` to `project` with `role`; returns the member id.
    async fn member(&self, project: &str, name: &str, role: ProjectRole) -> i64 {
        self.admin_api(
            Method::POST,
            &format!("/projects/{project}/members"),
            Some(json!({"role_id": role.id(), "member_user": {"username": name}})),
        )
        .await
        .1
        .expect("the new id in Location")
    }

    /// A robot of the project under test holding `perms`; returns its id and full name and
    /// secret.
    async fn robot(&self, name: &str, perms: &[Permission]) -> (i64, String, String) {
        let access: Vec<Value> = perms
            .iter()
            .map(|p| json!({"resource": p.resource.as_str(), "action": p.action.as_str()}))
            .collect();
        let (v, _) = self
            .admin_api(
                Method::POST,
                "/robots",
                Some(json!({"name": name, "level": "project", "duration": -1,
                    "permissions": [{"kind": "project", "namespace": self.project, "access": access}]})),
            )
            .await;
        (
            v["id"].as_i64().unwrap(),
            v["name"].as_str().unwrap().to_owned(),
            v["secret"].as_str().unwrap().to_owned(),
        )
    }
}

/// The user holding `role` in the project under test.
fn member_name(role: ProjectRole) -> String {
    format!("role-{}", role.id())
}

/// Sign `user` in to a session.
async fn session(s: &Server, http: &Client, user: &str, password: &str) -> Auth {
    let r = http
        .post(s.url("/c/login"))
        .form(&[("principal", user), ("password", password)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "login {user}");
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let csrf = r.headers()["x-harbor-csrf-token"]
        .to_str()
        .unwrap()
        .to_owned();
    Auth::Session { cookie, csrf }
}

/// Every permission some case needs: one robot is made for each.
fn robot_permissions() -> Vec<Permission> {
    let set: BTreeSet<Permission> = CASES
        .iter()
        .flat_map(|(_, need)| match need {
            Need::Perm(p) | Need::PermInFresh(p) => vec![*p],
            Need::All(ps) => ps.to_vec(),
            _ => Vec::new(),
        })
        .collect();
    set.into_iter().collect()
}

async fn world(public: bool) -> (World, Vec<Subject>) {
    let s = Server::start_with(&["--auth-mode", "token"]).await;
    let http = Client::builder().no_proxy().build().unwrap();
    let admin = session(&s, &http, "admin", ADMIN_PASSWORD).await;
    let project = if public { "pub" } else { "priv" }.to_owned();
    let mut w = World {
        s,
        http,
        admin,
        project: project.clone(),
        project_id: 0,
        public,
        config: String::new(),
        manifest: Vec::new(),
        digest: String::new(),
        target_member: 0,
        keep_robot: 0,
    };
    w.project_id = w
        .admin_api(
            Method::POST,
            "/projects",
            Some(json!({"project_name": project, "metadata": {"public": public.to_string()}})),
        )
        .await
        .1
        .expect("the new id in Location");
    w.admin_api(
        Method::POST,
        "/projects",
        Some(json!({"project_name": "other", "metadata": {"public": "false"}})),
    )
    .await;
    let config = r#"{"architecture":"amd64","os":"linux"}"#;
    w.config = sha256(config.as_bytes());
    w.admin_v2(
        Method::POST,
        &format!("/v2/{project}/app/blobs/uploads/?digest={}", w.config),
        "application/octet-stream",
        config.as_bytes().to_vec(),
    )
    .await;
    w.manifest = image_manifest(&w.config, config.len(), &[], None);
    w.digest = sha256(&w.manifest);
    w.tag_v1("v1").await;
    w.user("target").await;
    w.target_member = w.member(&project, "target", ProjectRole::Guest).await;
    w.keep_robot = w
        .robot("keep", &[Permission::new(R::Repository, A::Pull)])
        .await
        .0;

    let mut subjects = vec![
        Subject {
            label: "anonymous".into(),
            kind: Kind::Anonymous,
            auth: Auth::None,
            login: None,
        },
        Subject {
            label: "sysadmin".into(),
            kind: Kind::Sysadmin,
            auth: w.admin.clone(),
            login: Some(("admin".into(), ADMIN_PASSWORD.into())),
        },
    ];
    for role in ProjectRole::ALL {
        let name = member_name(role);
        w.user(&name).await;
        w.member(&project, &name, role).await;
        subjects.push(Subject {
            label: format!("{role:?}"),
            kind: Kind::Member(role),
            auth: session(&w.s, &w.http, &name, USER_PASSWORD).await,
            login: Some((name, USER_PASSWORD.into())),
        });
    }
    w.user("outsider").await;
    w.member("other", "outsider", ProjectRole::ProjectAdmin)
        .await;
    subjects.push(Subject {
        label: "outsider".into(),
        kind: Kind::Outsider,
        auth: session(&w.s, &w.http, "outsider", USER_PASSWORD).await,
        login: Some(("outsider".into(), USER_PASSWORD.into())),
    });
    let typical = vec![
        Permission::new(R::Repository, A::Pull),
        Permission::new(R::Repository, A::Push),
    ];
    let mut robots = vec![("ci".to_owned(), typical)];
    for (i, p) in robot_permissions().into_iter().enumerate() {
        robots.push((format!("only{i}"), vec![p]));
    }
    for (name, perms) in robots {
        let (_, full, secret) = w.robot(&name, &perms).await;
        let label = format!(
            "robot[{}]",
            perms
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        );
        subjects.push(Subject {
            label,
            kind: Kind::Robot(perms),
            auth: Auth::Basic {
                user: full.clone(),
                secret: secret.clone(),
            },
            login: Some((full, secret)),
        });
    }
    (w, subjects)
}

/// What one subject's fresh objects are called.
struct Fresh {
    del_digest: String,
    api_del_digest: String,
    v2_tag: String,
    api_tag: String,
    repo: String,
    project: String,
    spare_user: String,
    spare_member: i64,
    robot: i64,
}

/// Make the objects the destructive cases of subject `i` act on, as the administrator.
async fn fresh(w: &World, i: usize, kind: &Kind) -> Fresh {
    let p = &w.project;
    let del_digest = w
        .push_image(&format!("{p}/app"), &format!("del-{i}"), &format!("v2-{i}"))
        .await;
    let api_del_digest = w
        .push_image(
            &format!("{p}/app"),
            &format!("apidel-{i}"),
            &format!("api-{i}"),
        )
        .await;
    let (v2_tag, api_tag) = (format!("v2tag-{i}"), format!("apitag-{i}"));
    w.tag_v1(&v2_tag).await;
    w.tag_v1(&api_tag).await;
    let repo = format!("gone-{i}");
    w.push_image(&format!("{p}/{repo}"), "x", &format!("gone-{i}"))
        .await;
    let project = format!("fresh-{i}");
    w.admin_api(
        Method::POST,
        "/projects",
        Some(json!({"project_name": project, "metadata": {"public": w.public.to_string()}})),
    )
    .await;
    if let Kind::Member(role) = kind {
        w.member(&project, &member_name(*role), *role).await;
    }
    let spare_user = format!("spare-add-{i}");
    w.user(&spare_user).await;
    let gone_user = format!("spare-del-{i}");
    w.user(&gone_user).await;
    let spare_member = w.member(p, &gone_user, ProjectRole::Guest).await;
    let robot = w.robot(&format!("gone{i}"), &[]).await.0;
    Fresh {
        del_digest,
        api_del_digest,
        v2_tag,
        api_tag,
        repo,
        project,
        spare_user,
        spare_member,
        robot,
    }
}

/// A /v2 request with a bearer token.
async fn v2(
    w: &World,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> (StatusCode, String) {
    let mut b = w.http.request(method, w.url(path)).bearer_auth(token);
    if let Some(body) = body {
        b = b.header("content-type", MANIFEST_TYPE).body(body);
    }
    let r = b.send().await.unwrap();
    (r.status(), r.text().await.unwrap_or_default())
}

/// A token for `subject` asking for everything the /v2 cases use.
async fn token(w: &World, subject: &Subject) -> (String, Value) {
    let p = &w.project;
    let mut b = w.http.get(w.url("/service/token")).query(&[
        ("service", "berth"),
        ("scope", &format!("repository:{p}/app:pull,push,delete")),
        ("scope", &format!("repository:{p}/app2:pull,push")),
        ("scope", "registry:catalog:*"),
    ]);
    if let Some((u, pw)) = &subject.login {
        b = b.basic_auth(u, Some(pw));
    }
    let r = b.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "token for {}", subject.label);
    let v: Value = r.json().await.unwrap();
    let token = v["token"].as_str().unwrap().to_owned();
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    (token, claims)
}

/// The actions the token grants on `name`, sorted.
fn granted(claims: &Value, name: &str) -> Vec<String> {
    let mut actions: Vec<String> = claims["access"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["type"] == "repository" && a["name"] == name)
        .flat_map(|a| a["actions"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    actions.sort();
    actions
}

/// Run every case for subject `i`; returns the cells that disagree with the table and, for
/// each case, whether it was allowed.
async fn run_subject(w: Arc<World>, i: usize, subject: Subject) -> (Vec<String>, Vec<(Op, bool)>) {
    let f = fresh(&w, i, &subject.kind).await;
    let (tok, claims) = token(&w, &subject).await;
    let p = w.project.clone();
    let mut wrong = Vec::new();

    // The token grants exactly what the table allows.
    let has = |r, a| table_allows(&subject.kind, w.public, true, Permission::new(r, a));
    let want: Vec<String> = [
        (has(R::Artifact, A::Delete), "delete"),
        (has(R::Repository, A::Pull), "pull"),
        (has(R::Repository, A::Push), "push"),
    ]
    .into_iter()
    .filter(|(yes, _)| *yes)
    .map(|(_, a)| a.to_owned())
    .collect();
    let got = granted(&claims, &format!("{p}/app"));
    if got != want {
        wrong.push(format!(
            "{}: token grants {got:?} on {p}/app, the table {want:?}",
            subject.label
        ));
    }

    let a = &subject.auth;
    let repo = format!("/projects/{p}/repositories");
    let app = format!("{repo}/app");
    let mut seen = Vec::new();
    for (op, need) in CASES {
        let (status, body) = match op {
            Op::V2PullManifest => {
                v2(
                    &w,
                    &tok,
                    Method::GET,
                    &format!("/v2/{p}/app/manifests/v1"),
                    None,
                )
                .await
            }
            Op::V2PullBlob => {
                v2(
                    &w,
                    &tok,
                    Method::GET,
                    &format!("/v2/{p}/app/blobs/{}", w.config),
                    None,
                )
                .await
            }
            Op::V2ListTags => {
                v2(
                    &w,
                    &tok,
                    Method::GET,
                    &format!("/v2/{p}/app/tags/list"),
                    None,
                )
                .await
            }
            Op::V2Referrers => {
                v2(
                    &w,
                    &tok,
                    Method::GET,
                    &format!("/v2/{p}/app/referrers/{}", w.digest),
                    None,
                )
                .await
            }
            Op::V2StartUpload => {
                v2(
                    &w,
                    &tok,
                    Method::POST,
                    &format!("/v2/{p}/app/blobs/uploads/"),
                    None,
                )
                .await
            }
            Op::V2PushManifest => {
                v2(
                    &w,
                    &tok,
                    Method::PUT,
                    &format!("/v2/{p}/app/manifests/put-{i}"),
                    Some(w.manifest.clone()),
                )
                .await
            }
            Op::V2DeleteManifest => {
                v2(
                    &w,
                    &tok,
                    Method::DELETE,
                    &format!("/v2/{p}/app/manifests/{}", f.del_digest),
                    None,
                )
                .await
            }
            Op::V2DeleteTag => {
                v2(
                    &w,
                    &tok,
                    Method::DELETE,
                    &format!("/v2/{p}/app/manifests/{}", f.v2_tag),
                    None,
                )
                .await
            }
            Op::V2Catalog => {
                let (st, body) = v2(&w, &tok, Method::GET, "/v2/_catalog?n=1000", None).await;
                let listed = serde_json::from_str::<Value>(&body).ok().is_some_and(|v| {
                    v["repositories"]
                        .as_array()
                        .is_some_and(|r| r.contains(&json!(format!("{p}/app"))))
                });
                // Allowed: the repository is listed; refused: it is not (or no listing at all).
                let st = if st.is_success() && !listed {
                    StatusCode::NOT_FOUND
                } else {
                    st
                };
                (st, body)
            }
            Op::V2Mount => {
                v2(
                    &w,
                    &tok,
                    Method::POST,
                    &format!(
                        "/v2/{p}/app2/blobs/uploads/?mount={}&from={p}/app",
                        w.config
                    ),
                    None,
                )
                .await
            }
            Op::ProjectGet => w.api(a, Method::GET, &format!("/projects/{p}"), None).await,
            Op::ProjectUpdate => {
                let body = json!({"metadata": {"public": w.public.to_string()}});
                w.api(a, Method::PUT, &format!("/projects/{p}"), Some(body))
                    .await
            }
            Op::ProjectDelete => {
                w.api(a, Method::DELETE, &format!("/projects/{}", f.project), None)
                    .await
            }
            Op::MembersList => {
                w.api(a, Method::GET, &format!("/projects/{p}/members"), None)
                    .await
            }
            Op::MemberGet => {
                w.api(
                    a,
                    Method::GET,
                    &format!("/projects/{p}/members/{}", w.target_member),
                    None,
                )
                .await
            }
            Op::MemberAdd => {
                let body = json!({"role_id": 3, "member_user": {"username": f.spare_user}});
                w.api(
                    a,
                    Method::POST,
                    &format!("/projects/{p}/members"),
                    Some(body),
                )
                .await
            }
            Op::MemberUpdate => {
                let body = json!({"role_id": ProjectRole::Guest.id()});
                w.api(
                    a,
                    Method::PUT,
                    &format!("/projects/{p}/members/{}", w.target_member),
                    Some(body),
                )
                .await
            }
            Op::MemberDelete => {
                w.api(
                    a,
                    Method::DELETE,
                    &format!("/projects/{p}/members/{}", f.spare_member),
                    None,
                )
                .await
            }
            Op::ProjectLogs => {
                w.api(a, Method::GET, &format!("/projects/{p}/logs"), None)
                    .await
            }
            Op::ReposList => w.api(a, Method::GET, &repo, None).await,
            Op::RepoGet => w.api(a, Method::GET, &app, None).await,
            Op::RepoDelete => {
                w.api(a, Method::DELETE, &format!("{repo}/{}", f.repo), None)
                    .await
            }
            Op::ArtifactsList => {
                w.api(a, Method::GET, &format!("{app}/artifacts"), None)
                    .await
            }
            Op::ArtifactGet => {
                w.api(a, Method::GET, &format!("{app}/artifacts/v1"), None)
                    .await
            }
            Op::ArtifactDelete => {
                w.api(
                    a,
                    Method::DELETE,
                    &format!("{app}/artifacts/{}", f.api_del_digest),
                    None,
                )
                .await
            }
            Op::TagsList => {
                w.api(a, Method::GET, &format!("{app}/artifacts/v1/tags"), None)
                    .await
            }
            Op::TagCreate => {
                let body = json!({"name": format!("made-{i}")});
                w.api(
                    a,
                    Method::POST,
                    &format!("{app}/artifacts/v1/tags"),
                    Some(body),
                )
                .await
            }
            Op::TagDelete => {
                w.api(
                    a,
                    Method::DELETE,
                    &format!("{app}/artifacts/v1/tags/{}", f.api_tag),
                    None,
                )
                .await
            }
            Op::RobotsList => {
                let q = format!("/robots?q=Level%3Dproject%2CProjectID%3D{}", w.project_id);
                w.api(a, Method::GET, &q, None).await
            }
            Op::RobotGet => {
                w.api(a, Method::GET, &format!("/robots/{}", w.keep_robot), None)
                    .await
            }
            Op::RobotCreate => {
                let body = json!({"name": format!("made{i}"), "level": "project", "duration": -1,
                    "permissions": [{"kind": "project", "namespace": p,
                        "access": [{"resource": "repository", "action": "pull"}]}]});
                w.api(a, Method::POST, "/robots", Some(body)).await
            }
            Op::RobotUpdate => {
                let body = json!({"description": format!("touched by {i}")});
                w.api(
                    a,
                    Method::PUT,
                    &format!("/robots/{}", w.keep_robot),
                    Some(body),
                )
                .await
            }
            Op::RobotDelete => {
                w.api(a, Method::DELETE, &format!("/robots/{}", f.robot), None)
                    .await
            }
            Op::UsersList => w.api(a, Method::GET, "/users", None).await,
            Op::UserCreate => {
                let body = json!({"username": format!("new-{p}-{i}"), "password": USER_PASSWORD,
                    "email": format!("new-{i}@example.com"), "realname": "n"});
                w.api(a, Method::POST, "/users", Some(body)).await
            }
            Op::GroupCreate => {
                let body = json!({"group_name": format!("g-{i}"), "group_type": 1});
                w.api(a, Method::POST, "/usergroups", Some(body)).await
            }
            Op::ProjectCreate => {
                let body =
                    json!({"project_name": format!("made-{i}"), "metadata": {"public": "false"}});
                w.api(a, Method::POST, "/projects", Some(body)).await
            }
        };
        let want = expected(&subject.kind, w.public, *need);
        // Refusals are 401, 403, or 404 where the caller may not see the project.
        let refused = matches!(
            status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
        );
        let got = match (*op, status) {
            (Op::V2Mount, StatusCode::CREATED) => Some(true),
            (Op::V2Mount, StatusCode::ACCEPTED) => Some(false),
            (_, s) if s.is_success() => Some(true),
            _ if refused => None,
            _ => {
                wrong.push(format!(
                    "{} {op:?}: unexpected {status} {body}",
                    subject.label
                ));
                continue;
            }
        };
        seen.push((*op, got.is_some()));
        if got != want {
            let say = |o: Option<bool>| match o {
                Some(true) => "allow",
                Some(false) => "allow an upload but no mount",
                None => "refuse",
            };
            wrong.push(format!(
                "{} {op:?}: the table says {}, the server answered {status} {}",
                subject.label,
                say(want),
                body.chars().take(200).collect::<String>()
            ));
        }
    }
    (wrong, seen)
}

async fn matrix(public: bool) {
    let (w, subjects) = world(public).await;
    let w = Arc::new(w);
    let n = subjects.len();
    let results: Vec<_> = futures::stream::iter(subjects.into_iter().enumerate())
        .map(|(i, s)| run_subject(w.clone(), i, s))
        .buffer_unordered(4)
        .collect()
        .await;
    let mut wrong = Vec::new();
    let mut allowed = std::collections::BTreeMap::<String, (usize, usize)>::new();
    for (bad, seen) in results {
        wrong.extend(bad);
        for (op, yes) in seen {
            let e = allowed.entry(format!("{op:?}")).or_default();
            if yes {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cells disagree with the role table:\n{}",
        wrong.len(),
        n * CASES.len(),
        wrong.join("\n")
    );
    // In a private project every case was both allowed and refused to someone: none is
    // vacuous. (In a public one everybody pulls.)
    for (op, _) in CASES.iter().filter(|_| !public) {
        let (yes, no) = allowed.get(&format!("{op:?}")).copied().unwrap_or_default();
        assert!(yes > 0 && no > 0, "{op:?}: allowed {yes}, refused {no}");
    }
}

#[tokio::test]
async fn rbac_matrix_in_a_private_project() {
    matrix(false).await;
}

#[tokio::test]
async fn rbac_matrix_in_a_public_project() {
    matrix(true).await;
}
