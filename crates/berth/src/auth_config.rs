//! `[auth]`: access control, the token service and keyless (OIDC) logins.
//!
//! ```toml
//! [auth]
//! mode = "token"            # "token" (the default): sign-in and roles; "open": no access control
//! service = "berth"         # the token service's name (the challenge's service, tokens' aud)
//! issuer = "berth"          # tokens' iss
//! realm = "https://registry.example.com/service/token"  # default: from each request's Host
//! token_ttl = "30m"
//! token_key = "/etc/berth/token.pem"  # default: a key generated once, kept in the metadata store
//! max_failed_logins = 10    # per user and per address, then refused for `lockout`
//! lockout = "5m"
//! audit_retention = "90d"
//!
//! [auth.oidc]               # keyless CI logins: user name "oidc", password the identity token
//! [[auth.oidc.issuers]]
//! issuer = "https://token.actions.githubusercontent.com"
//! audience = "berth"
//! [[auth.oidc.rules]]
//! issuer = "https://token.actions.githubusercontent.com"
//! claims = { repository = "acme/app", ref = "refs/heads/main" }   # globs: * and ?
//! project = "acme"
//! actions = ["pull", "push"]
//! ```

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::config::{resolve_duration, serialize_duration, RawDuration};

/// `[auth]` as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// `token` or `open`.
    pub mode: Option<String>,
    /// The token service's name.
    pub service: Option<String>,
    /// Tokens' issuer.
    pub issuer: Option<String>,
    /// The token endpoint's absolute URL for challenges.
    pub realm: Option<String>,
    /// Token lifetime.
    pub token_ttl: Option<RawDuration>,
    /// A PEM file with the token signing key.
    pub token_key: Option<PathBuf>,
    /// Failed logins allowed before a lockout.
    pub max_failed_logins: Option<u32>,
    /// How long a lockout lasts.
    pub lockout: Option<RawDuration>,
    /// How long audit events are kept.
    pub audit_retention: Option<RawDuration>,
    /// Keyless CI logins.
    pub oidc: Option<RawOidc>,
}

/// `[auth.oidc]` as written.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    /// The user name under which identity tokens are presented (default `oidc`).
    pub username: Option<String>,
    /// Trusted issuers.
    #[serde(default)]
    pub issuers: Vec<OidcIssuer>,
    /// Rules mapping claims to project permissions.
    #[serde(default)]
    pub rules: Vec<OidcRule>,
}

/// A trusted identity token issuer.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OidcIssuer {
    /// Its `iss` (and discovery base URL).
    pub issuer: String,
    /// The `aud` tokens must carry.
    pub audience: String,
    /// Where its keys are; default: from `<issuer>/.well-known/openid-configuration`.
    pub jwks_url: Option<String>,
}

/// A rule: tokens from `issuer` whose claims match `claims` may do `actions` in `project`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OidcRule {
    /// The issuer the rule applies to.
    pub issuer: String,
    /// Claim name to glob pattern (`*` any run of characters, `?` one); all must match.
    #[serde(default)]
    pub claims: std::collections::BTreeMap<String, String>,
    /// The project it grants in.
    pub project: String,
    /// `pull`, `push`, `delete`.
    pub actions: Vec<String>,
}

/// Whether access control is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Sign-in, roles and tokens.
    Token,
    /// Anyone may do anything on `/v2` (the management API still needs sign-in).
    Open,
}

/// Validated `[auth]`.
#[derive(Debug, Clone, Serialize)]
pub struct Auth {
    /// Token or open.
    pub mode: AuthMode,
    /// The token service's name.
    pub service: String,
    /// Tokens' issuer.
    pub issuer: String,
    /// The realm for challenges, if fixed.
    pub realm: Option<String>,
    /// Token lifetime.
    #[serde(serialize_with = "serialize_duration")]
    pub token_ttl: Duration,
    /// The signing key file, if any.
    pub token_key: Option<PathBuf>,
    /// Failed logins allowed before a lockout.
    pub max_failed_logins: u32,
    /// Lockout length.
    #[serde(serialize_with = "serialize_duration")]
    pub lockout: Duration,
    /// Audit retention.
    #[serde(serialize_with = "serialize_duration")]
    pub audit_retention: Duration,
    /// Keyless CI logins, if configured.
    pub oidc: Option<RawOidc>,
}

impl Auth {
    /// Validate `raw` with the `--auth-mode` flag (or `BERTH_AUTH_MODE`) on top.
    ///
    /// # Errors
    /// On an unknown mode, a bad duration, an invalid realm, or OIDC rules naming no trusted
    /// issuer.
    pub fn resolve(raw: RawAuth, mode_flag: Option<&str>) -> anyhow::Result<Self> {
        let mode = match mode_flag.or(raw.mode.as_deref()) {
            None | Some("token") => AuthMode::Token,
            Some("open") => AuthMode::Open,
            Some(other) => bail!("auth.mode {other:?} is not \"token\" or \"open\""),
        };
        if let Some(r) = &raw.realm {
            if !(r.starts_with("http://") || r.starts_with("https://")) {
                bail!("auth.realm {r:?} must be an absolute http(s) URL");
            }
        }
        if let Some(oidc) = &raw.oidc {
            for rule in &oidc.rules {
                if !oidc.issuers.iter().any(|i| i.issuer == rule.issuer) {
                    bail!(
                        "auth.oidc rule for project {:?} names issuer {:?}, which is not in \
                         auth.oidc.issuers",
                        rule.project,
                        rule.issuer
                    );
                }
                for a in &rule.actions {
                    if !matches!(a.as_str(), "pull" | "push" | "delete") {
                        bail!("auth.oidc rule action {a:?} is not pull, push or delete");
                    }
                }
            }
        }
        Ok(Self {
            mode,
            service: raw.service.unwrap_or_else(|| "berth".into()),
            issuer: raw.issuer.unwrap_or_else(|| "berth".into()),
            realm: raw.realm,
            token_ttl: resolve_duration(
                "auth.token_ttl",
                None,
                raw.token_ttl,
                Duration::from_secs(30 * 60),
            )?,
            token_key: raw.token_key,
            max_failed_logins: raw.max_failed_logins.unwrap_or(10).max(1),
            lockout: resolve_duration(
                "auth.lockout",
                None,
                raw.lockout,
                Duration::from_secs(5 * 60),
            )?,
            audit_retention: resolve_duration(
                "auth.audit_retention",
                None,
                raw.audit_retention,
                Duration::from_secs(90 * 86_400),
            )?,
            oidc: raw.oidc,
        })
    }

    /// The token key file's contents, if one is configured.
    ///
    /// # Errors
    /// If it cannot be read.
    pub fn read_key(&self) -> anyhow::Result<Option<Vec<u8>>> {
        self.token_key
            .as_ref()
            .map(|p| {
                std::fs::read(p).with_context(|| format!("reading auth.token_key {}", p.display()))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_secure() {
        let a = Auth::resolve(RawAuth::default(), None).unwrap();
        assert_eq!(a.mode, AuthMode::Token);
        assert_eq!(a.token_ttl, Duration::from_secs(1800));
        assert_eq!(
            Auth::resolve(RawAuth::default(), Some("open"))
                .unwrap()
                .mode,
            AuthMode::Open
        );
        assert!(Auth::resolve(RawAuth::default(), Some("none")).is_err());
    }

    #[test]
    fn oidc_rules_need_a_trusted_issuer() {
        let raw: RawAuth = toml::from_str(
            "[oidc]\n[[oidc.rules]]\nissuer = \"https://x\"\nproject = \"p\"\nactions = [\"pull\"]\n",
        )
        .unwrap();
        assert!(Auth::resolve(raw, None).is_err());
    }
}
