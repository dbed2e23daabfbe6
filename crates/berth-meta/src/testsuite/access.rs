//! The behaviour every [`AccessStore`] backend must show. Each backend's tests call [`run`]
//! on a fresh store.

use std::time::Duration;

use berth_oci::{Digest, RepoName, Tag};

use crate::{
    AccessStore, AuditEvent, AuditFilter, ImmutableRule, Listing, MemberEntity, MetaError,
    MetaStore, NewManifest, NewProject, NewRobot, NewUser, Paging, ProjectFilter, ProjectId,
    ProjectRole, QuotaKind, QuotaLimits, Robot, RobotFilter, RobotLevel, RobotUpdate, Session,
    Statistics, UserId, UserUpdate, Visibility,
};

/// Exercise `store` through the whole [`AccessStore`] contract. It needs [`MetaStore`] too, to
/// make the repositories and manifests that projects hold and artifact listings show.
///
/// # Panics
/// On the first behaviour that differs from the contract.
pub async fn run<S: MetaStore + AccessStore>(store: &S) {
    users(store).await;
    groups(store).await;
    projects(store).await;
    project_visibility(store).await;
    members_and_roles(store).await;
    deleting_a_user_takes_its_memberships(store).await;
    deleting_a_project(store, store).await;
    robots(store).await;
    ids_are_not_reused(store).await;
    audit(store).await;
    settings_race_to_one_value(store).await;
    sessions(store).await;
    repositories(store, store).await;
    artifacts(store, store).await;
    statistics(store, store).await;
    quotas(store, store).await;
    immutable_rules(store, store).await;
}

/// Check a store migrated from before projects, whose repositories were `old/app`,
/// `old/lib/x` and `solo`: each first segment became a private project with no owner.
///
/// # Panics
/// If it did not.
pub async fn check_upgraded_projects(s: &dyn AccessStore) {
    for (name, repos) in [("old", 2), ("solo", 1)] {
        let p = s.project_by_name(name).await.unwrap().unwrap();
        assert_eq!((p.public, p.owner, p.repo_count), (false, None, repos));
        assert!(p.created_ms > 0);
    }
    let all = s
        .list_projects(&ProjectFilter::default(), Paging::ALL)
        .await
        .unwrap();
    assert_eq!(all.total, 2);
}

fn new_user(name: &str, email: &str) -> NewUser {
    NewUser {
        username: name.into(),
        email: email.into(),
        realname: format!("{name} real"),
        comment: String::new(),
        password_hash: format!("$argon2id$hash-of-{name}"),
        sysadmin: false,
    }
}

fn new_project(name: &str, public: bool) -> NewProject {
    NewProject {
        name: name.into(),
        public,
        owner: None,
    }
}

pub(super) async fn project(s: &dyn AccessStore, name: &str, public: bool) -> ProjectId {
    s.create_project(&new_project(name, public)).await.unwrap()
}

async fn user(s: &dyn AccessStore, name: &str) -> UserId {
    s.create_user(&new_user(name, "")).await.unwrap()
}

fn page(offset: u64, limit: u64) -> Paging {
    Paging { offset, limit }
}

fn names<T>(l: &Listing<T>, name: impl Fn(&T) -> &str) -> Vec<String> {
    l.items.iter().map(|i| name(i).to_owned()).collect()
}

fn repo(s: &str) -> RepoName {
    s.parse().expect("test names are valid")
}

fn tag(s: &str) -> Tag {
    s.parse().expect("test tags are valid")
}

/// Push a manifest of `content` into `r`, referencing `blobs` (linked first, with their
/// sizes) and `children`, tagged `tags`.
pub(super) async fn push(
    meta: &dyn MetaStore,
    r: &str,
    content: &[u8],
    blobs: &[(&[u8], u64)],
    children: Vec<Digest>,
    subject: Option<Digest>,
    tags: &[&str],
) -> Digest {
    let r = repo(r);
    let mut digests = Vec::new();
    for (bytes, size) in blobs {
        let d = Digest::sha256_of(bytes);
        meta.link_blob(&r, &d, *size).await.unwrap();
        digests.push(d);
    }
    let digest = Digest::sha256_of(content);
    let tags: Vec<Tag> = tags.iter().map(|t| tag(t)).collect();
    meta.put_manifest(
        NewManifest {
            repo: r,
            digest: digest.clone(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            artifact_type: None,
            subject,
            annotations: None,
            content: content.to_vec(),
            blobs: digests,
            manifests: children,
            pinned_tags: Vec::new(),
        },
        &tags,
    )
    .await
    .unwrap();
    digest
}

async fn users(s: &dyn AccessStore) {
    let alice = s
        .create_user(&new_user("u-alice", "alice@x"))
        .await
        .unwrap();
    assert!(matches!(
        s.create_user(&new_user("u-alice", "other@x")).await,
        Err(MetaError::AlreadyExists(_))
    ));
    assert!(matches!(
        s.create_user(&new_user("u-alice2", "alice@x")).await,
        Err(MetaError::AlreadyExists(_))
    ));
    // Empty e-mails are not unique.
    let bob = user(s, "u-bob").await;
    user(s, "u-carol").await;
    let got = s.user(alice).await.unwrap().unwrap();
    assert_eq!(
        (
            got.username.as_str(),
            got.email.as_str(),
            got.realname.as_str()
        ),
        ("u-alice", "alice@x", "u-alice real")
    );
    assert_eq!(got.password_hash, "$argon2id$hash-of-u-alice");
    assert!(!got.sysadmin);
    assert!(got.created_ms > 0 && got.updated_ms >= got.created_ms);
    assert_eq!(s.user_by_name("u-bob").await.unwrap().unwrap().id, bob);
    assert!(s.user_by_name("u-nobody").await.unwrap().is_none());
    assert!(s.user(-1).await.unwrap().is_none());

    // `_` and `%` in a search match themselves only.
    for n in ["u_x_1", "uxx_2", "u%y", "uay"] {
        s.create_user(&new_user(n, "")).await.unwrap();
    }
    let found = s.list_users(Some("u_x"), Paging::ALL).await.unwrap();
    assert_eq!(names(&found, |u| &u.username), ["u_x_1"]);
    let found = s.list_users(Some("u%"), Paging::ALL).await.unwrap();
    assert_eq!(names(&found, |u| &u.username), ["u%y"]);
    // By name, paged, with the total of all matches.
    let all = s.list_users(Some("u-"), Paging::ALL).await.unwrap();
    assert_eq!(
        names(&all, |u| &u.username),
        ["u-alice", "u-bob", "u-carol"]
    );
    let second = s.list_users(Some("u-"), page(1, 1)).await.unwrap();
    assert_eq!(
        (names(&second, |u| &u.username), second.total),
        (vec!["u-bob".into()], 3)
    );
    let past = s.list_users(Some("u-"), page(5, 10)).await.unwrap();
    assert_eq!((past.items.len(), past.total), (0, 3));
    assert!(s.list_users(None, Paging::ALL).await.unwrap().total >= 7);

    // Updates change only what they name.
    let update = UserUpdate {
        realname: Some("Alice A.".into()),
        sysadmin: Some(true),
        ..UserUpdate::default()
    };
    assert!(s.update_user(alice, &update).await.unwrap());
    let got = s.user(alice).await.unwrap().unwrap();
    assert_eq!((got.realname.as_str(), got.sysadmin), ("Alice A.", true));
    assert_eq!((got.email.as_str(), got.comment.as_str()), ("alice@x", ""));
    let taken = UserUpdate {
        email: Some("alice@x".into()),
        ..UserUpdate::default()
    };
    assert!(matches!(
        s.update_user(bob, &taken).await,
        Err(MetaError::AlreadyExists(_))
    ));
    assert!(!s.update_user(-1, &update).await.unwrap());
    let rehash = UserUpdate {
        password_hash: Some("$argon2id$new".into()),
        email: Some("bob@x".into()),
        comment: Some("c".into()),
        ..UserUpdate::default()
    };
    assert!(s.update_user(bob, &rehash).await.unwrap());
    let got = s.user(bob).await.unwrap().unwrap();
    assert_eq!(
        (
            got.password_hash.as_str(),
            got.email.as_str(),
            got.comment.as_str()
        ),
        ("$argon2id$new", "bob@x", "c")
    );
}

async fn groups(s: &dyn AccessStore) {
    let g = s.create_group("g-devs").await.unwrap();
    assert!(matches!(
        s.create_group("g-devs").await,
        Err(MetaError::AlreadyExists(_))
    ));
    let other = s.create_group("g-ops").await.unwrap();
    assert_eq!(s.group(g).await.unwrap().unwrap().name, "g-devs");
    assert_eq!(s.group_by_name("g-ops").await.unwrap().unwrap().id, other);
    assert!(s.group_by_name("g-none").await.unwrap().is_none());
    let listed = s.list_groups(Paging::ALL).await.unwrap();
    assert!(names(&listed, |g| &g.name).starts_with(&["g-devs".into(), "g-ops".into()]));
    let first = s.list_groups(page(0, 1)).await.unwrap();
    assert_eq!((first.items.len() as u64, first.total), (1, listed.total));

    let zed = user(s, "g-zed").await;
    let amy = user(s, "g-amy").await;
    assert!(s.add_to_group(g, zed).await.unwrap());
    assert!(s.add_to_group(g, amy).await.unwrap());
    assert!(s.add_to_group(g, amy).await.unwrap(), "idempotent");
    assert!(!s.add_to_group(g, -1).await.unwrap());
    assert!(!s.add_to_group(-1, amy).await.unwrap());
    let in_g: Vec<String> = s
        .group_users(g)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(in_g, ["g-amy", "g-zed"]);
    assert!(s.remove_from_group(g, zed).await.unwrap());
    assert!(!s.remove_from_group(g, zed).await.unwrap());
    assert_eq!(s.group_users(g).await.unwrap().len(), 1);

    // Deleting a group takes its project memberships.
    let p = project(s, "g-proj", false).await;
    let m = s
        .add_member(p, MemberEntity::Group(other), ProjectRole::Guest)
        .await
        .unwrap();
    assert!(s.delete_group(other).await.unwrap());
    assert!(!s.delete_group(other).await.unwrap());
    assert!(s.member(p, m).await.unwrap().is_none());
    assert!(s.group(other).await.unwrap().is_none());
}

async fn projects(s: &dyn AccessStore) {
    let owner = user(s, "p-owner").await;
    let id = s
        .create_project(&NewProject {
            name: "p-team".into(),
            public: false,
            owner: Some(owner),
        })
        .await
        .unwrap();
    assert!(matches!(
        s.create_project(&new_project("p-team", true)).await,
        Err(MetaError::AlreadyExists(_))
    ));
    let p = s.project(id).await.unwrap().unwrap();
    assert_eq!(
        (p.name.as_str(), p.public, p.owner, p.repo_count),
        ("p-team", false, Some(owner), 0)
    );
    assert!(p.created_ms > 0);
    assert_eq!(s.project_by_name("p-team").await.unwrap(), Some(p.clone()));
    assert!(s.project_by_name("p-none").await.unwrap().is_none());
    assert!(s.project(-1).await.unwrap().is_none());
    // The owner is its project admin.
    assert_eq!(
        s.roles_of(id, owner).await.unwrap(),
        [ProjectRole::ProjectAdmin]
    );
    let members = s.list_members(id, None, Paging::ALL).await.unwrap();
    assert_eq!(members.total, 1);
    assert_eq!(members.items[0].entity, MemberEntity::User(owner));
    assert_eq!(members.items[0].entity_name, "p-owner");

    assert!(s.set_project_public(id, true).await.unwrap());
    assert!(s.project(id).await.unwrap().unwrap().public);
    assert!(!s.set_project_public(-1, true).await.unwrap());

    // `_` and `%` in a search match themselves only.
    for n in ["p_e_1", "pxe_2", "p%e"] {
        s.create_project(&new_project(n, false)).await.unwrap();
    }
    let filter = |contains: &str| ProjectFilter {
        name_contains: Some(contains.into()),
        ..ProjectFilter::default()
    };
    let found = s.list_projects(&filter("p_e"), Paging::ALL).await.unwrap();
    assert_eq!(names(&found, |p| &p.name), ["p_e_1"]);
    let found = s.list_projects(&filter("p%"), Paging::ALL).await.unwrap();
    assert_eq!(names(&found, |p| &p.name), ["p%e"]);
    let found = s.list_projects(&filter("e_"), page(1, 1)).await.unwrap();
    assert_eq!(
        (names(&found, |p| &p.name), found.total),
        (vec!["pxe_2".into()], 2)
    );
    let public = ProjectFilter {
        name_contains: Some("p".into()),
        public: Some(true),
        visible_to: None,
    };
    let found = s.list_projects(&public, Paging::ALL).await.unwrap();
    assert_eq!(names(&found, |p| &p.name), ["p-team"]);
    let private = ProjectFilter {
        public: Some(false),
        ..public
    };
    let found = s.list_projects(&private, Paging::ALL).await.unwrap();
    assert!(!names(&found, |p| &p.name).contains(&"p-team".into()));
    assert!(names(&found, |p| &p.name).contains(&"p%e".into()));
}

async fn project_visibility(s: &dyn AccessStore) {
    let open = project(s, "v-open", true).await;
    let direct = project(s, "v-direct", false).await;
    let via_group = project(s, "v-group", false).await;
    project(s, "v-closed", false).await;
    let u = user(s, "v-user").await;
    let g = s.create_group("v-team").await.unwrap();
    s.add_to_group(g, u).await.unwrap();
    s.add_member(direct, MemberEntity::User(u), ProjectRole::Developer)
        .await
        .unwrap();
    s.add_member(via_group, MemberEntity::Group(g), ProjectRole::Guest)
        .await
        .unwrap();
    s.add_member(open, MemberEntity::User(u), ProjectRole::Guest)
        .await
        .unwrap();
    let seen = |visible_to| {
        let filter = ProjectFilter {
            name_contains: Some("v-".into()),
            public: None,
            visible_to,
        };
        async move {
            let l = s.list_projects(&filter, Paging::ALL).await.unwrap();
            assert_eq!(l.total, l.items.len() as u64);
            names(&l, |p| &p.name)
        }
    };
    assert_eq!(
        seen(None).await,
        ["v-closed", "v-direct", "v-group", "v-open"]
    );
    assert_eq!(seen(Some(Visibility::Anonymous)).await, ["v-open"]);
    // Listed once though it is public and a member of it.
    assert_eq!(
        seen(Some(Visibility::User(u))).await,
        ["v-direct", "v-group", "v-open"]
    );
    let stranger = user(s, "v-stranger").await;
    assert_eq!(seen(Some(Visibility::User(stranger))).await, ["v-open"]);
    // Leaving the group hides its project.
    s.remove_from_group(g, u).await.unwrap();
    assert_eq!(
        seen(Some(Visibility::User(u))).await,
        ["v-direct", "v-open"]
    );
}

async fn members_and_roles(s: &dyn AccessStore) {
    let p = project(s, "m-proj", false).await;
    let q = project(s, "m-other", false).await;
    let u = user(s, "m-user").await;
    let w = user(s, "m-watcher").await;
    let g = s.create_group("m-group").await.unwrap();
    let g2 = s.create_group("m-admins").await.unwrap();
    s.add_to_group(g, u).await.unwrap();
    s.add_to_group(g2, u).await.unwrap();

    let mu = s
        .add_member(p, MemberEntity::User(u), ProjectRole::Developer)
        .await
        .unwrap();
    let mg = s
        .add_member(p, MemberEntity::Group(g), ProjectRole::Guest)
        .await
        .unwrap();
    // Through a second group, the same role as directly: listed once.
    s.add_member(p, MemberEntity::Group(g2), ProjectRole::Developer)
        .await
        .unwrap();
    s.add_member(p, MemberEntity::User(w), ProjectRole::LimitedGuest)
        .await
        .unwrap();
    assert!(matches!(
        s.add_member(p, MemberEntity::User(u), ProjectRole::Guest)
            .await,
        Err(MetaError::AlreadyExists(_))
    ));
    assert!(matches!(
        s.add_member(p, MemberEntity::Group(g), ProjectRole::Guest)
            .await,
        Err(MetaError::AlreadyExists(_))
    ));
    for (project, entity) in [
        (-1, MemberEntity::User(u)),
        (p, MemberEntity::User(-1)),
        (p, MemberEntity::Group(-1)),
    ] {
        assert!(matches!(
            s.add_member(project, entity, ProjectRole::Guest).await,
            Err(MetaError::NotFound(_))
        ));
    }

    let m = s.member(p, mu).await.unwrap().unwrap();
    assert_eq!(
        (m.id, m.project_id, m.entity, m.entity_name.as_str(), m.role),
        (
            mu,
            p,
            MemberEntity::User(u),
            "m-user",
            ProjectRole::Developer
        )
    );
    assert_eq!(
        s.member(p, mg).await.unwrap().unwrap().entity_name,
        "m-group"
    );
    assert!(
        s.member(q, mu).await.unwrap().is_none(),
        "of another project"
    );

    assert_eq!(
        s.roles_of(p, u).await.unwrap(),
        [ProjectRole::Developer, ProjectRole::Guest]
    );
    assert!(s.roles_of(q, u).await.unwrap().is_empty());
    assert_eq!(s.roles_of(p, w).await.unwrap(), [ProjectRole::LimitedGuest]);

    s.add_member(q, MemberEntity::Group(g), ProjectRole::Maintainer)
        .await
        .unwrap();
    let of = s.memberships_of(u).await.unwrap();
    let of: Vec<(&str, &[ProjectRole])> = of
        .iter()
        .map(|(p, r)| (p.name.as_str(), r.as_slice()))
        .collect();
    assert_eq!(
        of,
        [
            ("m-other", &[ProjectRole::Maintainer][..]),
            ("m-proj", &[ProjectRole::Developer, ProjectRole::Guest][..]),
        ]
    );

    // Listed by name (users and groups together), searched, paged.
    let all = s.list_members(p, None, Paging::ALL).await.unwrap();
    assert_eq!(
        names(&all, |m| &m.entity_name),
        ["m-admins", "m-group", "m-user", "m-watcher"]
    );
    let found = s.list_members(p, Some("user"), Paging::ALL).await.unwrap();
    assert_eq!(names(&found, |m| &m.entity_name), ["m-user"]);
    let paged = s.list_members(p, Some("m-"), page(1, 2)).await.unwrap();
    assert_eq!(
        (names(&paged, |m| &m.entity_name), paged.total),
        (vec!["m-group".into(), "m-user".into()], 4)
    );
    let none = s.list_members(p, Some("m_"), Paging::ALL).await.unwrap();
    assert_eq!(none.total, 0);

    assert!(s
        .set_member_role(p, mu, ProjectRole::ProjectAdmin)
        .await
        .unwrap());
    assert!(!s.set_member_role(q, mu, ProjectRole::Guest).await.unwrap());
    assert_eq!(
        s.member(p, mu).await.unwrap().unwrap().role,
        ProjectRole::ProjectAdmin
    );
    assert!(!s.remove_member(q, mu).await.unwrap());
    assert!(s.remove_member(p, mu).await.unwrap());
    assert!(!s.remove_member(p, mu).await.unwrap());
    assert_eq!(
        s.roles_of(p, u).await.unwrap(),
        [ProjectRole::Developer, ProjectRole::Guest]
    );
}

async fn deleting_a_user_takes_its_memberships(s: &dyn AccessStore) {
    let u = s.create_user(&new_user("d-user", "d@x")).await.unwrap();
    let p = project(s, "d-proj", false).await;
    let g = s.create_group("d-group").await.unwrap();
    s.add_to_group(g, u).await.unwrap();
    let m = s
        .add_member(p, MemberEntity::User(u), ProjectRole::Developer)
        .await
        .unwrap();
    let session = Session {
        id_hash: "d-session".into(),
        user_id: u,
        csrf_token: "csrf".into(),
        expires_ms: i64::MAX,
    };
    s.create_session(&session).await.unwrap();
    let robot = s
        .create_robot(&NewRobot {
            creator: Some(u),
            ..new_robot("d-robot", RobotLevel::Project(p))
        })
        .await
        .unwrap();
    let owned = s
        .create_project(&NewProject {
            name: "d-owned".into(),
            public: false,
            owner: Some(u),
        })
        .await
        .unwrap();

    assert!(s.delete_user(u).await.unwrap());
    assert!(!s.delete_user(u).await.unwrap());
    assert!(s.user(u).await.unwrap().is_none());
    assert!(s.member(p, m).await.unwrap().is_none());
    assert!(s.group_users(g).await.unwrap().is_empty());
    assert!(s.session("d-session").await.unwrap().is_none());
    assert!(s.roles_of(owned, u).await.unwrap().is_empty());
    // Robots it created, and projects it owned, stay.
    assert!(s.robot(robot).await.unwrap().is_some());
    assert!(s.project(owned).await.unwrap().is_some());
    // Its name and e-mail are free again.
    s.create_user(&new_user("d-user", "d@x")).await.unwrap();
}

async fn deleting_a_project(meta: &dyn MetaStore, s: &dyn AccessStore) {
    let full = project(s, "dp-full", false).await;
    meta.link_blob(&repo("dp-full/app"), &Digest::sha256_of(b"dp"), 2)
        .await
        .unwrap();
    assert!(matches!(
        s.delete_project(full).await,
        Err(MetaError::NotEmpty(_))
    ));
    assert!(s.project(full).await.unwrap().is_some());
    // A repository named like the project counts too; a longer name with the same start
    // does not.
    let bare = project(s, "dp-bare", false).await;
    meta.link_blob(&repo("dp-bare"), &Digest::sha256_of(b"dp"), 2)
        .await
        .unwrap();
    assert!(matches!(
        s.delete_project(bare).await,
        Err(MetaError::NotEmpty(_))
    ));

    let empty = project(s, "dp", false).await;
    let u = user(s, "dp-user").await;
    let m = s
        .add_member(empty, MemberEntity::User(u), ProjectRole::Guest)
        .await
        .unwrap();
    let robot = s
        .create_robot(&new_robot("dp-robot", RobotLevel::Project(empty)))
        .await
        .unwrap();
    let system = s
        .create_robot(&new_robot("dp-robot", RobotLevel::System))
        .await
        .unwrap();
    assert!(s.delete_project(empty).await.unwrap());
    assert!(!s.delete_project(empty).await.unwrap());
    assert!(s.project(empty).await.unwrap().is_none());
    assert!(s.member(empty, m).await.unwrap().is_none());
    assert!(s.robot(robot).await.unwrap().is_none());
    assert!(s.robot(system).await.unwrap().is_some());
    assert!(s.user(u).await.unwrap().is_some());
    // The name may be used again.
    project(s, "dp", false).await;
}

fn new_robot(name: &str, level: RobotLevel) -> NewRobot {
    NewRobot {
        name: name.into(),
        description: format!("{name} robot"),
        level,
        secret_hash: "$argon2id$secret".into(),
        expires_ms: Some(1_000),
        permissions: "[]".into(),
        creator: None,
    }
}

async fn robots(s: &dyn AccessStore) {
    let p = project(s, "r-proj", false).await;
    let q = project(s, "r-other", false).await;
    let sys = s
        .create_robot(&new_robot("r-ci", RobotLevel::System))
        .await
        .unwrap();
    // Names are unique per level.
    let in_p = s
        .create_robot(&new_robot("r-ci", RobotLevel::Project(p)))
        .await
        .unwrap();
    let in_q = s
        .create_robot(&new_robot("r-ci", RobotLevel::Project(q)))
        .await
        .unwrap();
    for level in [RobotLevel::System, RobotLevel::Project(p)] {
        assert!(matches!(
            s.create_robot(&new_robot("r-ci", level)).await,
            Err(MetaError::AlreadyExists(_))
        ));
    }
    assert!(matches!(
        s.create_robot(&new_robot("r-x", RobotLevel::Project(-1)))
            .await,
        Err(MetaError::NotFound(_))
    ));

    let r = s.robot(in_p).await.unwrap().unwrap();
    assert_eq!(
        (r.name.as_str(), r.description.as_str(), r.level),
        ("r-ci", "r-ci robot", RobotLevel::Project(p))
    );
    assert_eq!(
        (
            r.secret_hash.as_str(),
            r.expires_ms,
            r.disabled,
            r.permissions.as_str()
        ),
        ("$argon2id$secret", Some(1_000), false, "[]")
    );
    assert_eq!(r.creator, None);
    for (level, id) in [
        (RobotLevel::System, sys),
        (RobotLevel::Project(p), in_p),
        (RobotLevel::Project(q), in_q),
    ] {
        assert_eq!(
            s.robot_by_name(level, "r-ci").await.unwrap().unwrap().id,
            id
        );
    }
    assert!(s
        .robot_by_name(RobotLevel::System, "r-none")
        .await
        .unwrap()
        .is_none());

    let ids = |l: Listing<Robot>| (l.items.iter().map(|r| r.id).collect::<Vec<_>>(), l.total);
    assert_eq!(
        ids(s
            .list_robots(RobotFilter::Project(p), Paging::ALL)
            .await
            .unwrap()),
        (vec![in_p], 1)
    );
    let system = ids(s
        .list_robots(RobotFilter::System, Paging::ALL)
        .await
        .unwrap());
    assert!(system.0.contains(&sys) && !system.0.contains(&in_p));
    let all = ids(s.list_robots(RobotFilter::All, Paging::ALL).await.unwrap());
    assert!(all.0.windows(2).all(|w| w[0] < w[1]), "by id");
    assert!([sys, in_p, in_q].iter().all(|id| all.0.contains(id)));
    let paged = ids(s.list_robots(RobotFilter::All, page(1, 1)).await.unwrap());
    assert_eq!(paged, (vec![all.0[1]], all.1));

    let update = RobotUpdate {
        description: Some("rotated".into()),
        expires_ms: Some(None),
        disabled: Some(true),
        permissions: Some("[{\"pull\":true}]".into()),
        secret_hash: Some("$argon2id$new".into()),
    };
    assert!(s.update_robot(in_p, &update).await.unwrap());
    let r = s.robot(in_p).await.unwrap().unwrap();
    assert_eq!(
        (
            r.description.as_str(),
            r.expires_ms,
            r.disabled,
            r.permissions.as_str(),
            r.secret_hash.as_str()
        ),
        ("rotated", None, true, "[{\"pull\":true}]", "$argon2id$new")
    );
    // `None` leaves a field; `Some(Some(t))` sets an expiry.
    let enable = RobotUpdate {
        disabled: Some(false),
        expires_ms: Some(Some(5)),
        ..RobotUpdate::default()
    };
    assert!(s.update_robot(in_p, &enable).await.unwrap());
    let r = s.robot(in_p).await.unwrap().unwrap();
    assert_eq!(
        (r.disabled, r.expires_ms, r.description.as_str()),
        (false, Some(5), "rotated")
    );
    assert!(!s.update_robot(-1, &enable).await.unwrap());

    assert!(s.delete_robot(in_q).await.unwrap());
    assert!(!s.delete_robot(in_q).await.unwrap());
    assert!(s.robot(in_q).await.unwrap().is_none());
}

/// Tokens name their account by id: a user or robot made after another was deleted never
/// gets its id, even when the deleted one was the newest (nor when it has the same name).
async fn ids_are_not_reused(s: &dyn AccessStore) {
    let gone = user(s, "i-gone").await;
    assert!(s.delete_user(gone).await.unwrap());
    let next = user(s, "i-gone").await;
    assert!(next > gone, "user id {gone} was given again");
    let gone = s
        .create_robot(&new_robot("i-gone", RobotLevel::System))
        .await
        .unwrap();
    assert!(s.delete_robot(gone).await.unwrap());
    let next = s
        .create_robot(&new_robot("i-gone", RobotLevel::System))
        .await
        .unwrap();
    assert!(next > gone, "robot id {gone} was given again");
}

fn event(time_ms: i64, user: &str, op: &str, resource: &str, project: Option<&str>) -> AuditEvent {
    AuditEvent {
        id: 0,
        time_ms,
        username: user.into(),
        operation: op.into(),
        resource_type: if op == "login" { "user" } else { "artifact" }.into(),
        resource: resource.into(),
        project: project.map(Into::into),
        source_ip: Some("10.0.0.1".into()),
        success: op != "login",
    }
}

async fn audit(s: &dyn AccessStore) {
    s.append_audit(&[]).await.unwrap();
    let base = 1_000_000;
    s.append_audit(&[
        event(base + 1, "a-ann", "push", "a-p/app:1", Some("a-p")),
        event(base + 2, "a-ann", "pull", "a-p/app_x:1", Some("a-p")),
        event(base + 3, "a-ben", "push", "a-q/app:2", Some("a-q")),
        event(base + 4, "a-ben", "login", "a-ben", None),
        // The same time as the one before: the later one stored comes first.
        event(base + 4, "a-ann", "delete", "a-q/app:2", Some("a-q")),
    ])
    .await
    .unwrap();
    let q = |f: AuditFilter| async move {
        let window = AuditFilter {
            from_ms: f.from_ms.or(Some(base)),
            to_ms: f.to_ms.or(Some(base + 100)),
            ..f
        };
        let l = s.list_audit(&window, Paging::ALL).await.unwrap();
        assert_eq!(l.total, l.items.len() as u64);
        l.items.iter().map(|e| e.time_ms - base).collect::<Vec<_>>()
    };
    let all = s
        .list_audit(
            &AuditFilter {
                from_ms: Some(base),
                ..AuditFilter::default()
            },
            Paging::ALL,
        )
        .await
        .unwrap();
    assert_eq!(all.total, 5);
    let e = &all.items[0];
    assert!(e.id > 0);
    assert_eq!(
        (
            e.username.as_str(),
            e.operation.as_str(),
            e.resource.as_str()
        ),
        ("a-ann", "delete", "a-q/app:2")
    );
    assert_eq!(
        all.items[1],
        AuditEvent {
            id: all.items[1].id,
            ..event(base + 4, "a-ben", "login", "a-ben", None)
        }
    );
    assert_eq!(q(AuditFilter::default()).await, [4, 4, 3, 2, 1]);
    fn by(f: impl FnOnce(&mut AuditFilter)) -> AuditFilter {
        let mut filter = AuditFilter::default();
        f(&mut filter);
        filter
    }
    assert_eq!(q(by(|f| f.username = Some("a-ben".into()))).await, [4, 3]);
    assert_eq!(q(by(|f| f.operation = Some("push".into()))).await, [3, 1]);
    assert_eq!(q(by(|f| f.resource_type = Some("user".into()))).await, [4]);
    assert_eq!(
        q(by(|f| f.resource_contains = Some("app_".into()))).await,
        [2]
    );
    assert_eq!(
        q(by(|f| f.resource_contains = Some("app%".into()))).await,
        [0; 0]
    );
    assert_eq!(
        q(by(|f| f.projects = Some(vec!["a-q".into()]))).await,
        [4, 3]
    );
    assert_eq!(
        q(by(|f| f.projects = Some(vec!["a-p".into(), "a-q".into()]))).await,
        [4, 3, 2, 1]
    );
    assert_eq!(q(by(|f| f.projects = Some(Vec::new()))).await, [0; 0]);
    assert_eq!(
        q(by(|f| {
            f.from_ms = Some(base + 2);
            f.to_ms = Some(base + 3);
        }))
        .await,
        [3, 2]
    );
    assert_eq!(
        q(by(|f| {
            f.username = Some("a-ann".into());
            f.projects = Some(vec!["a-q".into()]);
        }))
        .await,
        [4]
    );
    let window = AuditFilter {
        from_ms: Some(base),
        ..AuditFilter::default()
    };
    let second = s.list_audit(&window, page(1, 2)).await.unwrap();
    assert_eq!(second.total, 5);
    assert_eq!(second.items, all.items[1..3]);

    assert_eq!(s.prune_audit(base + 3).await.unwrap(), 2);
    assert_eq!(q(AuditFilter::default()).await, [4, 4, 3]);
}

async fn settings_race_to_one_value(s: &dyn AccessStore) {
    assert!(s.setting("s-key").await.unwrap().is_none());
    let racers = (0..8).map(|i| {
        let value = format!("value-{i}");
        async move { s.setting_or_insert("s-key", &value).await.unwrap() }
    });
    let got = futures::future::join_all(racers).await;
    assert!(got.iter().all(|v| *v == got[0]), "{got:?}");
    assert_eq!(
        s.setting("s-key").await.unwrap().as_deref(),
        Some(got[0].as_str())
    );
    assert_eq!(s.setting_or_insert("s-key", "late").await.unwrap(), got[0]);
    assert_eq!(s.setting_or_insert("s-other", "v").await.unwrap(), "v");
}

async fn sessions(s: &dyn AccessStore) {
    let u = user(s, "s-user").await;
    let now = crate::jobs::epoch_ms(std::time::SystemTime::now());
    let live = Session {
        id_hash: "s-live".into(),
        user_id: u,
        csrf_token: "t".into(),
        expires_ms: now + 600_000,
    };
    let expired = Session {
        id_hash: "s-expired".into(),
        expires_ms: now - 1,
        ..live.clone()
    };
    s.create_session(&live).await.unwrap();
    s.create_session(&expired).await.unwrap();
    assert!(matches!(
        s.create_session(&live).await,
        Err(MetaError::AlreadyExists(_))
    ));
    assert_eq!(s.session("s-live").await.unwrap(), Some(live.clone()));
    assert!(s.session("s-expired").await.unwrap().is_none());
    assert!(s.session("s-none").await.unwrap().is_none());
    assert!(s.prune_sessions().await.unwrap() >= 1);
    assert_eq!(s.prune_sessions().await.unwrap(), 0);
    assert!(s.session("s-live").await.unwrap().is_some());
    assert!(s.delete_session("s-live").await.unwrap());
    assert!(!s.delete_session("s-live").await.unwrap());
    assert!(s.session("s-live").await.unwrap().is_none());
}

async fn repositories(meta: &dyn MetaStore, s: &dyn AccessStore) {
    project(s, "rp", false).await;
    for r in [
        "rp", "rp/a_b", "rp/axb", "rp/c/d", "rp-x/e", "rpx/f", "rp0/g", "rp.z/h",
    ] {
        meta.link_blob(&repo(r), &Digest::sha256_of(b"rp"), 2)
            .await
            .unwrap();
    }
    assert_eq!(
        s.project_by_name("rp").await.unwrap().unwrap().repo_count,
        4
    );
    let list = |contains: Option<&'static str>, p: Paging| async move {
        let l = s
            .list_project_repositories("rp", contains, p)
            .await
            .unwrap();
        (names(&l, |r| &r.name), l.total)
    };
    assert_eq!(
        list(None, Paging::ALL).await,
        (
            vec![
                "rp".into(),
                "rp/a_b".into(),
                "rp/axb".into(),
                "rp/c/d".into()
            ],
            4
        )
    );
    assert_eq!(
        list(Some("a_"), Paging::ALL).await,
        (vec!["rp/a_b".into()], 1)
    );
    assert_eq!(list(Some("%"), Paging::ALL).await, (vec![], 0));
    assert_eq!(
        list(None, page(1, 2)).await,
        (vec!["rp/a_b".into(), "rp/axb".into()], 4)
    );
    let none = s
        .list_project_repositories("rp-none", None, Paging::ALL)
        .await
        .unwrap();
    assert_eq!(none.total, 0);

    let found = s.search_repositories("x/", Paging::ALL).await.unwrap();
    assert_eq!(names(&found, |r| &r.name), ["rp-x/e", "rpx/f"]);
    // `_` is a character, not a wildcard.
    let found = s.search_repositories("_", Paging::ALL).await.unwrap();
    let found = names(&found, |r| &r.name);
    assert!(found.contains(&"rp/a_b".to_owned()), "{found:?}");
    assert!(found.iter().all(|n| n.contains('_')), "{found:?}");
    // A NUL character in a search is the caller's mistake, never a store failure.
    match s.search_repositories("x\0y", Paging::ALL).await {
        Ok(found) => assert_eq!(found.total, 0),
        Err(MetaError::Invalid(_)) => {}
        Err(e) => panic!("a NUL in a search: {e:?}"),
    }

    // Counts and times.
    let r = "rp/c/d";
    let d = push(
        meta,
        r,
        b"{\"rp\":1}",
        &[(b"rp-l", 3)],
        vec![],
        None,
        &["v1"],
    )
    .await;
    push(meta, r, b"{\"rp\":2}", &[], vec![], None, &[]).await;
    s.record_pulls(&[(r.into(), d.clone(), 7), (r.into(), d, 9)])
        .await
        .unwrap();
    let info = s
        .list_project_repositories("rp", Some("c/d"), Paging::ALL)
        .await
        .unwrap()
        .items
        .remove(0);
    assert_eq!((info.artifact_count, info.pull_count), (2, 2));
    assert!(info.created_ms > 0 && info.updated_ms >= info.created_ms);
    assert_eq!(info.created_ms % 1000, 0, "whole seconds: {info:?}");
}

async fn artifacts(meta: &dyn MetaStore, s: &dyn AccessStore) {
    let r = "art/app";
    assert!(s.list_artifacts(r, Paging::ALL).await.unwrap().is_none());
    let layer_a: (&[u8], u64) = (b"art-a", 100);
    let layer_b: (&[u8], u64) = (b"art-b", 20);
    let config: (&[u8], u64) = (b"art-config", 3);
    let one_content = b"{\"art\":1}";
    let one = push(
        meta,
        r,
        one_content,
        &[config, layer_a],
        vec![],
        None,
        &["1.0"],
    )
    .await;
    // Stored times are in whole seconds: a second apart, the order is certain.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let two_content = b"{\"art\":22}";
    let two = push(
        meta,
        r,
        two_content,
        &[config, layer_a, layer_b],
        vec![],
        None,
        &["2.0", "latest"],
    )
    .await;
    let index_content = b"{\"index\":333}";
    let index = push(
        meta,
        r,
        index_content,
        &[],
        vec![one.clone(), two.clone()],
        None,
        &[],
    )
    .await;
    let sig_content = b"{\"sig\":4444}";
    let sig = push(meta, r, sig_content, &[], vec![], Some(two.clone()), &[]).await;

    let all = s.list_artifacts(r, Paging::ALL).await.unwrap().unwrap();
    assert_eq!(all.total, 4);
    let digests: Vec<&Digest> = all.items.iter().map(|a| &a.digest).collect();
    assert_eq!(digests[3], &one, "newest first: {digests:?}");
    let first = &all.items[0];
    assert!(first.push_ms >= all.items[3].push_ms + 1000);

    let a_two = s.artifact(r, &two).await.unwrap().unwrap();
    assert_eq!(a_two.size, two_content.len() as u64 + 123);
    assert_eq!(
        a_two.media_type,
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(a_two.artifact_type, None);
    let tags: Vec<&str> = a_two.tags.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(tags, ["2.0", "latest"]);
    assert!(a_two.tags.iter().all(|(_, t)| *t >= a_two.push_ms));
    assert!(a_two.references.is_empty() && a_two.subject.is_none());
    assert_eq!(a_two.pull_ms, None);
    assert!(all.items.contains(&a_two));
    // By tag, the same artifact; an unknown tag or repository, none.
    assert_eq!(
        s.artifact_by_tag(r, "latest").await.unwrap().as_ref(),
        Some(&a_two)
    );
    assert_eq!(s.artifact_by_tag(r, "nope").await.unwrap(), None);
    assert_eq!(s.artifact_by_tag("art/none", "latest").await.unwrap(), None);

    let a_one = s.artifact(r, &one).await.unwrap().unwrap();
    assert_eq!(a_one.size, one_content.len() as u64 + 103);
    let a_index = s.artifact(r, &index).await.unwrap().unwrap();
    let mut children = vec![one.clone(), two.clone()];
    children.sort_by_key(ToString::to_string);
    assert_eq!(a_index.references, children);
    assert_eq!(a_index.size, index_content.len() as u64);
    assert_eq!(
        s.artifact(r, &sig).await.unwrap().unwrap().subject,
        Some(two.clone())
    );
    assert!(s
        .artifact(r, &Digest::sha256_of(b"none"))
        .await
        .unwrap()
        .is_none());
    assert!(s.artifact("art/none", &one).await.unwrap().is_none());

    // Pages of the same order, with the total.
    let second = s.list_artifacts(r, page(1, 2)).await.unwrap().unwrap();
    assert_eq!(second.total, 4);
    assert_eq!(second.items, all.items[1..3]);
    // A moved tag goes with its manifest.
    push(
        meta,
        r,
        one_content,
        &[config, layer_a],
        vec![],
        None,
        &["latest"],
    )
    .await;
    let a_one = s.artifact(r, &one).await.unwrap().unwrap();
    let tags: Vec<&str> = a_one.tags.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(tags, ["1.0", "latest"]);

    // Pulls: the latest time per manifest, a count per pull; unknown ones skipped.
    s.record_pulls(&[]).await.unwrap();
    s.record_pulls(&[
        (r.into(), one.clone(), 5_000),
        (r.into(), one.clone(), 4_000),
        (r.into(), two.clone(), 6_000),
        ("art/none".into(), one.clone(), 7_000),
        (r.into(), Digest::sha256_of(b"none"), 8_000),
    ])
    .await
    .unwrap();
    assert_eq!(
        s.artifact(r, &one).await.unwrap().unwrap().pull_ms,
        Some(5_000)
    );
    assert_eq!(
        s.artifact(r, &two).await.unwrap().unwrap().pull_ms,
        Some(6_000)
    );
    assert_eq!(s.artifact(r, &index).await.unwrap().unwrap().pull_ms, None);
    let info = s.search_repositories("art/app", Paging::ALL).await.unwrap();
    assert_eq!(info.items[0].pull_count, 3);
}

async fn statistics(meta: &dyn MetaStore, s: &dyn AccessStore) {
    let before = s.statistics().await.unwrap();
    project(s, "st-pub", true).await;
    project(s, "st-priv", false).await;
    let content = b"{\"st\":1}";
    push(
        meta,
        "st-pub/a",
        content,
        &[(b"st-blob", 1000)],
        vec![],
        None,
        &[],
    )
    .await;
    // The same blob in another repository is stored once; the manifest is stored again.
    push(
        meta,
        "st-pub/b",
        content,
        &[(b"st-blob", 1000)],
        vec![],
        None,
        &[],
    )
    .await;
    push(meta, "st-priv/c", b"{}", &[], vec![], None, &[]).await;
    let after = s.statistics().await.unwrap();
    let grown = Statistics {
        public_projects: after.public_projects - before.public_projects,
        private_projects: after.private_projects - before.private_projects,
        public_repos: after.public_repos - before.public_repos,
        private_repos: after.private_repos - before.private_repos,
        total_storage: after.total_storage - before.total_storage,
    };
    assert_eq!(
        grown,
        Statistics {
            public_projects: 1,
            private_projects: 1,
            public_repos: 2,
            private_repos: 1,
            total_storage: 1000 + 2 * content.len() as u64 + 2,
        }
    );
}

/// A manifest of `blobs` (already linked) in `r`, put without tags.
async fn put_plain(
    meta: &dyn MetaStore,
    r: &str,
    content: &[u8],
    blobs: &[&Digest],
) -> Result<Digest, MetaError> {
    let digest = Digest::sha256_of(content);
    meta.put_manifest(
        NewManifest {
            repo: repo(r),
            digest: digest.clone(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            artifact_type: None,
            subject: None,
            annotations: None,
            content: content.to_vec(),
            blobs: blobs.iter().map(|d| (*d).clone()).collect(),
            manifests: vec![],
            pinned_tags: Vec::new(),
        },
        &[],
    )
    .await
    .map(|()| digest)
}

async fn usage(meta: &dyn MetaStore, project: &str) -> (u64, u64) {
    let q = meta.quota(project).await.unwrap();
    (q.used_storage, q.used_count)
}

async fn quotas(meta: &dyn MetaStore, s: &dyn AccessStore) {
    let id = project(s, "quota", false).await;
    let q = meta.list_quotas(Some(id), Paging::ALL).await.unwrap();
    assert_eq!(q.total, 1);
    let q = &q.items[0];
    assert_eq!((q.project.as_str(), q.project_id), ("quota", Some(id)));
    assert_eq!(
        (q.used_storage, q.used_count, q.hard),
        (0, 0, QuotaLimits::default())
    );

    let layer = |n: &str| Digest::sha256_of(format!("quota-layer-{n}").as_bytes());
    let (l1, l2, l3, l4) = (layer("1"), layer("2"), layer("3"), layer("4"));
    for (r, d, size) in [
        ("quota/a", &l1, 100),
        ("quota/a", &l2, 200),
        ("quota/a", &l3, 300),
        ("quota/b", &l1, 100),
        ("quota/b", &l3, 300),
        ("quota/a", &l4, 1000),
    ] {
        meta.link_blob(&repo(r), d, size).await.unwrap();
    }
    // Linked but unreferenced blobs count for nothing yet.
    assert_eq!(usage(meta, "quota").await, (0, 0));
    let c1: &[u8] = b"{\"quota\":1}";
    let m1 = put_plain(meta, "quota/a", c1, &[&l1, &l2]).await.unwrap();
    assert_eq!(usage(meta, "quota").await, (300 + c1.len() as u64, 1));
    // l1 is shared with m1 (in another repository of the project): counted once.
    let c2: &[u8] = b"{\"quota\":22}";
    let m2 = put_plain(meta, "quota/b", c2, &[&l1, &l3]).await.unwrap();
    let manifests = (c1.len() + c2.len()) as u64;
    assert_eq!(usage(meta, "quota").await, (600 + manifests, 2));
    // Putting it again changes nothing; neither do tags.
    put_plain(meta, "quota/a", c1, &[&l1, &l2]).await.unwrap();
    assert_eq!(usage(meta, "quota").await, (600 + manifests, 2));
    // Other projects are apart.
    assert_eq!(usage(meta, "elsewhere").await, (0, 0));

    // A storage limit: a manifest of blobs the project has is let in, one of a new blob not.
    let limit = 600 + manifests + 40;
    meta.set_quota(
        "quota",
        QuotaLimits {
            storage: Some(limit),
            count: None,
        },
    )
    .await
    .unwrap();
    let c3: &[u8] = b"{\"quota\":3}";
    put_plain(meta, "quota/a", c3, &[&l3]).await.unwrap();
    let manifests = manifests + c3.len() as u64;
    assert_eq!(usage(meta, "quota").await, (600 + manifests, 3));
    let c4: &[u8] = b"{\"quota\":4}";
    match put_plain(meta, "quota/a", c4, &[&l4]).await {
        Err(MetaError::QuotaExceeded(e)) => {
            assert_eq!(e.project, "quota");
            assert_eq!(e.kind, QuotaKind::Storage);
            assert_eq!(
                (e.limit, e.would_be),
                (limit, 1600 + manifests + c4.len() as u64)
            );
            assert!(e.to_string().contains("storage quota"), "{e}");
        }
        other => panic!("a push past the storage quota: {other:?}"),
    }
    // Nothing of it was written.
    assert_eq!(usage(meta, "quota").await, (600 + manifests, 3));
    let d4 = Digest::sha256_of(c4);
    assert!(meta
        .manifest_by_digest(&repo("quota/a"), &d4)
        .await
        .unwrap()
        .is_none());

    // A count limit.
    meta.set_quota(
        "quota",
        QuotaLimits {
            storage: None,
            count: Some(3),
        },
    )
    .await
    .unwrap();
    match put_plain(meta, "quota/b", b"{\"quota\":5}", &[]).await {
        Err(MetaError::QuotaExceeded(e)) => {
            assert_eq!((e.kind, e.limit, e.would_be), (QuotaKind::Count, 3, 4));
        }
        other => panic!("a push past the count quota: {other:?}"),
    }
    // What is stored stays readable and can be put again while at the limit.
    put_plain(meta, "quota/a", c3, &[&l3]).await.unwrap();
    let q = meta.quota("quota").await.unwrap();
    assert_eq!(q.project_id, Some(id));
    assert_eq!(
        q.hard,
        QuotaLimits {
            storage: None,
            count: Some(3)
        }
    );
    assert!(q.updated_ms > 0);

    // Deletes free quota at once: m2's l1 and l3 stay referenced (by m1 and m3).
    assert!(meta.delete_manifest(&repo("quota/b"), &m2).await.unwrap());
    assert_eq!(
        usage(meta, "quota").await,
        (600 + manifests - c2.len() as u64, 2)
    );
    assert!(meta.delete_manifest(&repo("quota/a"), &m1).await.unwrap());
    // l1 and l2 went with m1; l3 stays with m3.
    assert_eq!(usage(meta, "quota").await, (300 + c3.len() as u64, 1));
    assert!(meta.delete_repository(&repo("quota/a")).await.unwrap());
    assert_eq!(usage(meta, "quota").await, (0, 0));

    // The listing of every project has it with its limits.
    let all = meta.list_quotas(None, Paging::ALL).await.unwrap();
    let listed = all.items.iter().find(|q| q.project == "quota").unwrap();
    assert_eq!(listed.hard.count, Some(3));
    assert_eq!(all.total as usize, all.items.len());

    // Deleting the project forgets its limits: a new project of that name starts unlimited.
    assert!(meta.delete_repository(&repo("quota/b")).await.unwrap());
    assert!(s.delete_project(id).await.unwrap());
    let again = project(s, "quota", false).await;
    let q = meta.quota("quota").await.unwrap();
    assert_eq!(
        (q.project_id, q.hard),
        (Some(again), QuotaLimits::default())
    );
}

async fn immutable_rules(meta: &dyn MetaStore, s: &dyn AccessStore) {
    let id = project(s, "imm", false).await;
    let rule = |priority, selectors: &str| ImmutableRule {
        id: 0,
        project_id: id,
        disabled: false,
        priority,
        selectors: selectors.into(),
        created_ms: 0,
        updated_ms: 0,
    };
    let second = meta
        .create_immutable_rule(&rule(5, "{\"b\":1}"))
        .await
        .unwrap();
    let first = meta
        .create_immutable_rule(&rule(1, "{\"a\":1}"))
        .await
        .unwrap();
    let rules = meta.immutable_rules("imm").await.unwrap();
    let ids: Vec<i64> = rules.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![first, second], "by priority");
    assert_eq!(rules[0].selectors, "{\"a\":1}");
    assert!(rules[0].created_ms > 0 && !rules[0].disabled);
    assert!(meta.immutable_rules("other").await.unwrap().is_empty());
    match meta
        .create_immutable_rule(&ImmutableRule {
            project_id: 999_999,
            ..rule(0, "{}")
        })
        .await
    {
        Err(MetaError::NotFound(_)) => {}
        other => panic!("a rule of no project: {other:?}"),
    }
    let mut changed = rules[0].clone();
    changed.disabled = true;
    changed.priority = 9;
    assert!(meta.update_immutable_rule(&changed).await.unwrap());
    let rules = meta.immutable_rules("imm").await.unwrap();
    assert_eq!(
        (rules[1].id, rules[1].disabled, rules[1].priority),
        (first, true, 9)
    );
    // Another project's id does not reach it.
    let other = project(s, "imm-other", false).await;
    assert!(!meta
        .update_immutable_rule(&ImmutableRule {
            project_id: other,
            ..changed.clone()
        })
        .await
        .unwrap());
    assert!(!meta.delete_immutable_rule(other, first).await.unwrap());
    assert!(meta.delete_immutable_rule(id, first).await.unwrap());
    assert!(!meta.delete_immutable_rule(id, first).await.unwrap());

    // Pinned tags: created, put again on the same manifest, never moved.
    let r = repo("imm/app");
    let put = |content: &'static [u8], tags: &[&str], pinned: &[&str]| {
        let tags: Vec<Tag> = tags.iter().map(|t| tag(t)).collect();
        let pinned: Vec<String> = pinned.iter().map(|t| (*t).to_owned()).collect();
        let r = r.clone();
        async move {
            meta.put_manifest(
                NewManifest {
                    repo: r,
                    digest: Digest::sha256_of(content),
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    artifact_type: None,
                    subject: None,
                    annotations: None,
                    content: content.to_vec(),
                    blobs: vec![],
                    manifests: vec![],
                    pinned_tags: pinned,
                },
                &tags,
            )
            .await
        }
    };
    put(b"{\"imm\":1}", &["v1", "latest"], &["v1"])
        .await
        .unwrap();
    put(b"{\"imm\":1}", &["v1"], &["v1"]).await.unwrap();
    match put(b"{\"imm\":2}", &["latest", "v1"], &["v1"]).await {
        Err(MetaError::TagImmutable(t)) => assert_eq!(t, "v1"),
        other => panic!("moving a pinned tag: {other:?}"),
    }
    // Nothing of the refused put was written: latest did not move, the manifest is absent.
    let latest = meta
        .manifest_by_tag(&r, &tag("latest"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.digest, Digest::sha256_of(b"{\"imm\":1}"));
    assert!(meta
        .manifest_by_digest(&r, &Digest::sha256_of(b"{\"imm\":2}"))
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        meta.tags_of(&r, &latest.digest).await.unwrap(),
        vec!["latest".to_owned(), "v1".to_owned()]
    );
    // Unpinned, it moves.
    put(b"{\"imm\":2}", &["v1"], &[]).await.unwrap();
    assert_eq!(
        meta.tags_of(&r, &latest.digest).await.unwrap(),
        vec!["latest".to_owned()]
    );

    // Deletes that keep protected tags: the tags are judged in the delete's transaction, and
    // a refused delete removes nothing.
    let protect =
        |name: &'static str| -> crate::TagGuard { std::sync::Arc::new(move |t| t == name) };
    let second = Digest::sha256_of(b"{\"imm\":2}");
    match meta
        .delete_manifest_keeping(&r, &second, Some(protect("v1")))
        .await
    {
        Err(MetaError::TagImmutable(t)) => assert_eq!(t, "v1"),
        other => panic!("deleting the manifest of a protected tag: {other:?}"),
    }
    assert_eq!(
        meta.tags_of(&r, &second).await.unwrap(),
        vec!["v1".to_owned()]
    );
    match meta
        .delete_repository_keeping(&r, Some(protect("latest")))
        .await
    {
        Err(MetaError::TagImmutable(t)) => assert_eq!(t, "latest"),
        other => panic!("deleting a repository with a protected tag: {other:?}"),
    }
    assert!(meta
        .manifest_by_tag(&r, &tag("latest"))
        .await
        .unwrap()
        .is_some());
    // A guard that protects none of the tags lets both through; a missing manifest is false.
    assert!(meta
        .delete_manifest_keeping(&r, &latest.digest, Some(protect("v1")))
        .await
        .unwrap());
    assert!(!meta
        .delete_manifest_keeping(&r, &latest.digest, Some(protect("v1")))
        .await
        .unwrap());
    assert!(meta
        .delete_repository_keeping(&r, Some(protect("latest")))
        .await
        .unwrap());
    assert!(!meta
        .delete_repository_keeping(&r, Some(protect("latest")))
        .await
        .unwrap());
}
