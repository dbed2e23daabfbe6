//! Building the keyless-login verifier from `[auth.oidc]`.

use berth_core::access::oidc::{ClaimRule, OidcVerifier, TrustedIssuer};
use berth_core::access::RepoActions;

use crate::auth_config::RawOidc;

/// The verifier `[auth.oidc]` describes.
///
/// # Errors
/// If the HTTP client cannot be built.
pub fn verifier(cfg: &RawOidc) -> anyhow::Result<OidcVerifier> {
    let issuers = cfg
        .issuers
        .iter()
        .map(|i| TrustedIssuer {
            issuer: i.issuer.clone(),
            audience: i.audience.clone(),
            jwks_url: i.jwks_url.clone(),
        })
        .collect();
    let rules = cfg
        .rules
        .iter()
        .map(|r| ClaimRule {
            issuer: r.issuer.clone(),
            claims: r.claims.clone(),
            project: r.project.clone(),
            actions: r
                .actions
                .iter()
                .filter_map(|a| RepoActions::parse_one(a))
                .fold(RepoActions::NONE, RepoActions::union),
        })
        .collect();
    Ok(OidcVerifier::new(
        cfg.username.clone().unwrap_or_else(|| "oidc".into()),
        issuers,
        rules,
    )?)
}
