//! Users and groups of users.

use berth_meta::{Group, GroupId, Listing, NewUser, Paging, User, UserId, UserUpdate};

use super::{Admin, Caller};
use crate::access::{password, Principal};
use crate::Error;

/// A user to create, as the API receives it.
#[derive(Debug, Clone, Default)]
pub struct NewUserRequest {
    /// The login name.
    pub username: String,
    /// E-mail address (may be empty).
    pub email: String,
    /// Full name.
    pub realname: String,
    /// Free text.
    pub comment: String,
    /// The password in the clear (checked for strength, then hashed).
    pub password: String,
}

/// Changes to a user's profile; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ProfileChange {
    /// New e-mail address.
    pub email: Option<String>,
    /// New full name.
    pub realname: Option<String>,
    /// New comment.
    pub comment: Option<String>,
}

/// Harbor's rule for user names: 1 to 255 characters, none of `,"~#%$` nor a control
/// character, and not the robot prefix (which would make the user look like a robot).
fn check_username(name: &str) -> Result<(), Error> {
    let bad = name.is_empty()
        || name.chars().count() > 255
        || name.starts_with(crate::access::ROBOT_PREFIX)
        || name
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || ",\"~#%$:".contains(c));
    if bad {
        return Err(Error::Invalid(format!(
            "invalid user name {name:?}: 1 to 255 characters, no spaces, no robot$ prefix, none of ,\"~#%$:"
        )));
    }
    Ok(())
}

fn check_email(email: &str) -> Result<(), Error> {
    if email.is_empty() || (email.contains('@') && email.len() <= 255) {
        Ok(())
    } else {
        Err(Error::Invalid(format!("invalid e-mail address {email:?}")))
    }
}

impl Admin {
    /// Users whose name contains `name_contains`. System administrators only.
    ///
    /// # Errors
    /// [`Error::Unauthorized`]/[`Error::Denied`] for other callers; store errors.
    pub async fn list_users(
        &self,
        who: &Caller,
        name_contains: Option<&str>,
        page: Paging,
    ) -> Result<Listing<User>, Error> {
        who.require_sysadmin()?;
        Ok(self.access.store().list_users(name_contains, page).await?)
    }

    /// Users whose name contains `name_contains`, for picking a member: any signed-in
    /// user may search (as in Harbor's `/users/search`).
    ///
    /// # Errors
    /// [`Error::Unauthorized`] for an anonymous caller; store errors.
    pub async fn search_users(
        &self,
        who: &Caller,
        name_contains: &str,
        page: Paging,
    ) -> Result<Listing<User>, Error> {
        who.require_signed_in()?;
        Ok(self
            .access
            .store()
            .list_users(Some(name_contains), page)
            .await?)
    }

    /// Create a local user. System administrators only.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad name, e-mail or weak password; [`Error::Conflict`] if
    /// the name or e-mail is taken.
    pub async fn create_user(&self, who: &Caller, req: NewUserRequest) -> Result<User, Error> {
        who.require_sysadmin()?;
        check_username(&req.username)?;
        check_email(&req.email)?;
        password::check_strength(&req.password)?;
        let hash = password::hash_off_thread(req.password).await?;
        let new = NewUser {
            username: req.username.clone(),
            email: req.email,
            realname: req.realname,
            comment: req.comment,
            password_hash: hash,
            sysadmin: false,
        };
        let id = self.access.store().create_user(&new).await?;
        self.audit(who, "create", "user", &req.username, None);
        self.user_record(id).await
    }

    async fn user_record(&self, id: UserId) -> Result<User, Error> {
        self.access
            .store()
            .user(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("user {id} does not exist")))
    }

    fn require_self_or_admin(who: &Caller, id: UserId) -> Result<(), Error> {
        match &who.principal {
            p if p.is_sysadmin() => Ok(()),
            Principal::User { id: me, .. } if *me == id => Ok(()),
            Principal::Anonymous => Err(Error::Unauthorized("sign in first".into())),
            _ => Err(Error::Denied(
                "only the user or a system administrator may do this".into(),
            )),
        }
    }

    /// The user `id`. The user itself or a system administrator.
    ///
    /// # Errors
    /// [`Error::Denied`] for other callers; [`Error::NotFound`].
    pub async fn user(&self, who: &Caller, id: UserId) -> Result<User, Error> {
        Self::require_self_or_admin(who, id)?;
        self.user_record(id).await
    }

    /// The signed-in user.
    ///
    /// # Errors
    /// [`Error::Unauthorized`] for an anonymous caller; [`Error::NotEmpty`] (Harbor's 412)
    /// for a caller that is not a local user (a robot).
    pub async fn current_user(&self, who: &Caller) -> Result<User, Error> {
        match &who.principal {
            Principal::User { id, .. } => self.user_record(*id).await,
            Principal::Anonymous => Err(Error::Unauthorized("sign in first".into())),
            _ => Err(Error::NotEmpty(
                "the caller is not a local user and has no profile".into(),
            )),
        }
    }

    /// Change a user's e-mail, full name or comment. The user itself or a system
    /// administrator.
    ///
    /// # Errors
    /// [`Error::Denied`]; [`Error::NotFound`]; [`Error::Invalid`] for a bad e-mail;
    /// [`Error::Conflict`] if the e-mail is taken.
    pub async fn update_profile(
        &self,
        who: &Caller,
        id: UserId,
        change: ProfileChange,
    ) -> Result<(), Error> {
        Self::require_self_or_admin(who, id)?;
        if let Some(e) = &change.email {
            check_email(e)?;
        }
        let update = UserUpdate {
            email: change.email,
            realname: change.realname,
            comment: change.comment,
            ..UserUpdate::default()
        };
        let user = self.user_record(id).await?;
        if !self.access.store().update_user(id, &update).await? {
            return Err(Error::NotFound(format!("user {id} does not exist")));
        }
        self.audit(who, "update", "user", &user.username, None);
        Ok(())
    }

    /// Change a user's password. A user changing its own password must give the old one; a
    /// system administrator changing another user's need not.
    ///
    /// # Errors
    /// [`Error::Denied`]; [`Error::NotFound`]; [`Error::Invalid`] for a weak new password,
    /// or a wrong or missing old one.
    pub async fn change_password(
        &self,
        who: &Caller,
        id: UserId,
        old: Option<&str>,
        new: &str,
    ) -> Result<(), Error> {
        Self::require_self_or_admin(who, id)?;
        let user = self.user_record(id).await?;
        let own = matches!(&who.principal, Principal::User { id: me, .. } if *me == id);
        if own {
            let hash = user.password_hash.clone();
            let ok = password::verify_off_thread(old.unwrap_or_default(), Some(hash)).await?;
            if !ok {
                return Err(Error::Invalid("the old password is wrong".into()));
            }
        }
        password::check_strength(new)?;
        let update = UserUpdate {
            password_hash: Some(password::hash_off_thread(new.to_owned()).await?),
            ..UserUpdate::default()
        };
        if !self.access.store().update_user(id, &update).await? {
            return Err(Error::NotFound(format!("user {id} does not exist")));
        }
        self.audit(who, "update", "user", &user.username, None);
        Ok(())
    }

    /// Make a user a system administrator or not. System administrators only; nobody may
    /// demote itself (so the last administrator cannot lock everyone out by mistake).
    ///
    /// # Errors
    /// [`Error::Denied`]; [`Error::NotFound`]; [`Error::Invalid`] for demoting oneself.
    pub async fn set_sysadmin(
        &self,
        who: &Caller,
        id: UserId,
        sysadmin: bool,
    ) -> Result<(), Error> {
        who.require_sysadmin()?;
        if !sysadmin && matches!(&who.principal, Principal::User { id: me, .. } if *me == id) {
            return Err(Error::Invalid("you cannot demote yourself".into()));
        }
        let user = self.user_record(id).await?;
        let update = UserUpdate {
            sysadmin: Some(sysadmin),
            ..UserUpdate::default()
        };
        if !self.access.store().update_user(id, &update).await? {
            return Err(Error::NotFound(format!("user {id} does not exist")));
        }
        self.access.forget(&format!("user:{id}"));
        self.audit(who, "update", "user", &user.username, None);
        Ok(())
    }

    /// Delete a user (its memberships and sessions go with it; its tokens stop working).
    /// System administrators only; nobody may delete itself.
    ///
    /// # Errors
    /// [`Error::Denied`]; [`Error::NotFound`]; [`Error::Invalid`] for deleting oneself.
    pub async fn delete_user(&self, who: &Caller, id: UserId) -> Result<(), Error> {
        who.require_sysadmin()?;
        if matches!(&who.principal, Principal::User { id: me, .. } if *me == id) {
            return Err(Error::Invalid("you cannot delete yourself".into()));
        }
        let user = self.user_record(id).await?;
        if !self.access.store().delete_user(id).await? {
            return Err(Error::NotFound(format!("user {id} does not exist")));
        }
        self.access.forget(&format!("user:{id}"));
        self.audit(who, "delete", "user", &user.username, None);
        Ok(())
    }

    /// Groups, by name. Any signed-in user (to pick a member group).
    ///
    /// # Errors
    /// [`Error::Unauthorized`] for an anonymous caller; store errors.
    pub async fn list_groups(&self, who: &Caller, page: Paging) -> Result<Listing<Group>, Error> {
        who.require_signed_in()?;
        Ok(self.access.store().list_groups(page).await?)
    }

    /// The group `id`. Any signed-in user.
    ///
    /// # Errors
    /// [`Error::Unauthorized`]; [`Error::NotFound`].
    pub async fn group(&self, who: &Caller, id: GroupId) -> Result<Group, Error> {
        who.require_signed_in()?;
        self.group_record(id).await
    }

    async fn group_record(&self, id: GroupId) -> Result<Group, Error> {
        self.access
            .store()
            .group(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("group {id} does not exist")))
    }

    /// Create a group. System administrators only.
    ///
    /// # Errors
    /// [`Error::Denied`]; [`Error::Invalid`] for a bad name; [`Error::Conflict`].
    pub async fn create_group(&self, who: &Caller, name: &str) -> Result<Group, Error> {
        who.require_sysadmin()?;
        check_username(name).map_err(|_| Error::Invalid(format!("invalid group name {name:?}")))?;
        let id = self.access.store().create_group(name).await?;
        self.audit(who, "create", "usergroup", name, None);
        self.group_record(id).await
    }

    /// Delete a group (its project memberships go with it). System administrators only.
    ///
    /// # Errors
    /// [`Error::Denied`]; [`Error::NotFound`].
    pub async fn delete_group(&self, who: &Caller, id: GroupId) -> Result<(), Error> {
        who.require_sysadmin()?;
        let group = self.group_record(id).await?;
        if !self.access.store().delete_group(id).await? {
            return Err(Error::NotFound(format!("group {id} does not exist")));
        }
        self.audit(who, "delete", "usergroup", &group.name, None);
        Ok(())
    }

    /// The users in group `id`. Any signed-in user.
    ///
    /// # Errors
    /// [`Error::Unauthorized`]; [`Error::NotFound`].
    pub async fn group_users(&self, who: &Caller, id: GroupId) -> Result<Vec<User>, Error> {
        who.require_signed_in()?;
        self.group_record(id).await?;
        Ok(self.access.store().group_users(id).await?)
    }

    /// Put a user in a group or take it out. System administrators only.
    ///
    /// # Errors
    /// [`Error::Denied`]; [`Error::NotFound`] for an unknown group or user, or (removing)
    /// a user not in the group.
    pub async fn set_group_member(
        &self,
        who: &Caller,
        group: GroupId,
        user: UserId,
        member: bool,
    ) -> Result<(), Error> {
        who.require_sysadmin()?;
        let g = self.group_record(group).await?;
        let u = self.user_record(user).await?;
        let store = self.access.store();
        let done = if member {
            store.add_to_group(group, user).await?
        } else {
            store.remove_from_group(group, user).await?
        };
        if !done {
            return Err(Error::NotFound(format!(
                "user {} is not in group {}",
                u.username, g.name
            )));
        }
        let op = if member { "add" } else { "remove" };
        self.audit(
            who,
            op,
            "usergroup",
            &format!("{}/{}", g.name, u.username),
            None,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names() {
        assert!(check_username("alice").is_ok());
        assert!(check_username("").is_err());
        assert!(check_username("robot$x").is_err());
        assert!(check_username("a b").is_err());
        assert!(check_username("a,b").is_err());
        assert!(check_email("").is_ok());
        assert!(check_email("a@b.c").is_ok());
        assert!(check_email("nope").is_err());
    }
}
