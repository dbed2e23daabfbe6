//! Browser sessions: `/c/login` trades a user name and password for a session id (kept in
//! a cookie) and a CSRF token; the store keeps only the id's SHA-256.

use std::net::IpAddr;
use std::time::Duration;

use berth_meta::Session;
use sha2::{Digest as _, Sha256};

use super::{unix_ms, Admin};
use crate::access::token::random_hex;
use crate::access::Principal;
use crate::Error;

/// How long a session lasts after signing in.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 60 * 60);

/// A session just opened: the id for the cookie and the CSRF token, each shown once.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The session id (the cookie's value).
    pub id: String,
    /// The token unsafe requests must echo in `X-Harbor-CSRF-Token`.
    pub csrf_token: String,
    /// Who signed in.
    pub principal: Principal,
}

fn hash_id(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

impl Admin {
    /// Sign a user in (with the login rate limit and audit of [`Access::login`]) and open a
    /// session. Robots have no sessions: they use their secret on each request.
    ///
    /// # Errors
    /// [`Error::Unauthorized`] for wrong credentials or a robot; [`Error::TooManyRequests`].
    ///
    /// [`Access::login`]: crate::Access::login
    pub async fn open_session(
        &self,
        username: &str,
        password: &str,
        source: Option<IpAddr>,
    ) -> Result<NewSession, Error> {
        let principal = self.access.login(username, password, source).await?;
        let Principal::User { id: user_id, .. } = principal else {
            return Err(Error::Unauthorized(
                "only users sign in to sessions; robots send their secret with each request".into(),
            ));
        };
        let id = random_hex(32)?;
        let csrf_token = random_hex(32)?;
        let ttl = i64::try_from(SESSION_TTL.as_millis()).unwrap_or(i64::MAX);
        let session = Session {
            id_hash: hash_id(&id),
            user_id,
            csrf_token: csrf_token.clone(),
            expires_ms: unix_ms().saturating_add(ttl),
        };
        self.access.store().create_session(&session).await?;
        Ok(NewSession {
            id,
            csrf_token,
            principal,
        })
    }

    /// The user a session id stands for and the session's CSRF token, or `None` if the
    /// session is unknown or expired or its user is gone.
    ///
    /// # Errors
    /// Store errors.
    pub async fn session(&self, id: &str) -> Result<Option<(Principal, String)>, Error> {
        let store = self.access.store();
        let Some(session) = store.session(&hash_id(id)).await? else {
            return Ok(None);
        };
        let Some(user) = store.user(session.user_id).await? else {
            return Ok(None);
        };
        let principal = Principal::User {
            id: user.id,
            name: user.username,
            sysadmin: user.sysadmin,
        };
        Ok(Some((principal, session.csrf_token)))
    }

    /// End a session. Ending one that does not exist is no error.
    ///
    /// # Errors
    /// Store errors.
    pub async fn close_session(&self, id: &str) -> Result<(), Error> {
        self.access.store().delete_session(&hash_id(id)).await?;
        Ok(())
    }
}
