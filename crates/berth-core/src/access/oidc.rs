//! Keyless CI login: a job presents the OIDC identity token its platform gives it (GitHub
//! Actions, GitLab CI, a Kubernetes service account) as the password of the user name
//! `oidc`. Berth checks the token against its issuer's published keys (JWKS, found through
//! the issuer's discovery document unless configured), its audience and expiry, then maps
//! its claims to project permissions by configured rules. Nothing is stored: no secret to
//! leak or rotate.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::robot::{RobotAccess, RobotPermission};
use super::{Principal, RepoActions};
use crate::Error;

/// A trusted issuer.
#[derive(Debug, Clone)]
pub struct TrustedIssuer {
    /// Its `iss`.
    pub issuer: String,
    /// The `aud` its tokens must carry for Berth.
    pub audience: String,
    /// Where its keys are; `None`: from its discovery document.
    pub jwks_url: Option<String>,
}

/// Tokens from `issuer` whose claims all match `claims` may do `actions` in `project`.
#[derive(Debug, Clone)]
pub struct ClaimRule {
    /// The issuer.
    pub issuer: String,
    /// Claim name to glob (`*`, `?`).
    pub claims: BTreeMap<String, String>,
    /// The project.
    pub project: String,
    /// The actions.
    pub actions: RepoActions,
}

/// How long fetched keys are trusted before they are fetched again.
const JWKS_TTL: Duration = Duration::from_secs(300);
/// Least time between fetches caused by an unknown key id (so forged ids cannot make us
/// hammer the issuer).
const JWKS_REFETCH: Duration = Duration::from_secs(10);

/// Checks identity tokens from trusted issuers.
pub struct OidcVerifier {
    username: String,
    issuers: Vec<TrustedIssuer>,
    rules: Vec<ClaimRule>,
    http: reqwest::Client,
    keys: Mutex<HashMap<String, (Arc<JwkSet>, Instant)>>,
}

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcVerifier")
            .field("issuers", &self.issuers)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

fn unauthorized(why: &str) -> Error {
    Error::Unauthorized(format!("identity token refused: {why}"))
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters and `?` one.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn claim_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl OidcVerifier {
    /// A verifier trusting `issuers`, granting by `rules`, for logins as `username`.
    ///
    /// # Errors
    /// If the HTTP client cannot be built.
    pub fn new(
        username: String,
        issuers: Vec<TrustedIssuer>,
        rules: Vec<ClaimRule>,
    ) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Internal(format!("building the OIDC HTTP client: {e}")))?;
        Ok(Self {
            username,
            issuers,
            rules,
            http,
            keys: Mutex::new(HashMap::new()),
        })
    }

    /// The user name under which clients present identity tokens.
    pub fn username(&self) -> &str {
        &self.username
    }

    async fn get_json(&self, url: &str) -> Result<Value, Error> {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| {
                tracing::warn!(%url, error = %e, "fetching from an OIDC issuer failed");
                unauthorized("the issuer's keys cannot be fetched")
            })?;
        resp.json()
            .await
            .map_err(|_| unauthorized("the issuer's answer is not JSON"))
    }

    async fn fetch_keys(&self, issuer: &TrustedIssuer) -> Result<Arc<JwkSet>, Error> {
        let url = match &issuer.jwks_url {
            Some(u) => u.clone(),
            None => {
                let discovery = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.issuer.trim_end_matches('/')
                );
                let doc = self.get_json(&discovery).await?;
                doc.get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| unauthorized("the issuer's discovery document has no jwks_uri"))?
                    .to_owned()
            }
        };
        let set: JwkSet = serde_json::from_value(self.get_json(&url).await?)
            .map_err(|_| unauthorized("the issuer's JWKS is malformed"))?;
        let set = Arc::new(set);
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(issuer.issuer.clone(), (set.clone(), Instant::now()));
        Ok(set)
    }

    async fn key_for(
        &self,
        issuer: &TrustedIssuer,
        kid: Option<&str>,
    ) -> Result<DecodingKey, Error> {
        let cached = self
            .keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&issuer.issuer)
            .cloned();
        let find = |set: &JwkSet| match kid {
            Some(k) => set.find(k).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        let jwk = match cached {
            Some((set, at)) if at.elapsed() < JWKS_TTL => match find(&set) {
                Some(k) => Some(k),
                // A key we have not seen: the issuer may have rotated; fetch again, but not
                // more often than JWKS_REFETCH.
                None if at.elapsed() >= JWKS_REFETCH => find(&*self.fetch_keys(issuer).await?),
                None => None,
            },
            _ => find(&*self.fetch_keys(issuer).await?),
        };
        let jwk =
            jwk.ok_or_else(|| unauthorized("it is signed with a key its issuer does not publish"))?;
        DecodingKey::from_jwk(&jwk).map_err(|_| unauthorized("the issuer's key is not usable"))
    }

    /// The principal an identity token stands for.
    ///
    /// # Errors
    /// [`Error::Unauthorized`] if the token is not valid, comes from an issuer not trusted,
    /// or no rule grants it anything.
    pub async fn verify(&self, token: &str) -> Result<Principal, Error> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| unauthorized("malformed"))?;
        if !matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::EdDSA
        ) {
            // Never a shared-secret algorithm: the "key" would be public.
            return Err(unauthorized("its signing algorithm is not accepted"));
        }
        // Which issuer to ask for keys: read `iss` before checking the signature, then check
        // everything (including `iss` again) against that issuer's keys.
        let payload = token
            .split('.')
            .nth(1)
            .and_then(|p| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p)
                    .ok()
            })
            .and_then(|b| serde_json::from_slice::<Map<String, Value>>(&b).ok())
            .ok_or_else(|| unauthorized("malformed"))?;
        let iss = payload.get("iss").and_then(Value::as_str).unwrap_or("");
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.issuer == iss)
            .ok_or_else(|| unauthorized("its issuer is not trusted"))?;
        let key = self.key_for(issuer, header.kid.as_deref()).await?;
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&issuer.issuer]);
        v.set_audience(&[&issuer.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.leeway = 30;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                unauthorized(match e.kind() {
                    K::ExpiredSignature => "it has expired",
                    K::InvalidAudience => "it is for another audience",
                    K::InvalidSignature => "its signature is not valid",
                    _ => "it is not valid",
                })
            })?
            .claims;
        let permissions = self.permissions(&issuer.issuer, &claims);
        if permissions.is_empty() {
            return Err(unauthorized("no rule grants this identity anything"));
        }
        let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
        Ok(Principal::Oidc {
            subject: format!("{}#{sub}", issuer.issuer),
            permissions: Arc::new(permissions),
        })
    }

    fn permissions(&self, issuer: &str, claims: &Map<String, Value>) -> Vec<RobotPermission> {
        let mut by_project: BTreeMap<&str, RepoActions> = BTreeMap::new();
        for rule in self.rules.iter().filter(|r| r.issuer == issuer) {
            let matches = rule.claims.iter().all(|(name, pattern)| {
                claims
                    .get(name)
                    .and_then(claim_text)
                    .is_some_and(|value| glob(pattern, &value))
            });
            if matches {
                let e = by_project.entry(&rule.project).or_default();
                *e = e.union(rule.actions);
            }
        }
        by_project
            .into_iter()
            .filter(|(_, a)| !a.is_empty())
            .map(|(project, actions)| {
                let access = actions
                    .names()
                    .into_iter()
                    .map(|a| {
                        let resource = if a == "delete" {
                            "artifact"
                        } else {
                            "repository"
                        };
                        RobotAccess {
                            resource: resource.into(),
                            action: a.into(),
                            effect: None,
                        }
                    })
                    .collect();
                RobotPermission {
                    kind: "project".into(),
                    namespace: project.to_owned(),
                    access,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("acme/*", "acme/app"));
        assert!(glob("refs/heads/main", "refs/heads/main"));
        assert!(!glob("refs/heads/main", "refs/heads/mainx"));
        assert!(glob("*", ""));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("*/release-*", "acme/release-1.2"));
        assert!(!glob("acme/*", "acmex/app"));
    }

    #[test]
    fn rules_map_claims_to_permissions() {
        let v = OidcVerifier::new(
            "oidc".into(),
            vec![],
            vec![
                ClaimRule {
                    issuer: "https://ci".into(),
                    claims: [("repository".to_owned(), "acme/*".to_owned())].into(),
                    project: "acme".into(),
                    actions: RepoActions::PULL,
                },
                ClaimRule {
                    issuer: "https://ci".into(),
                    claims: [("ref".to_owned(), "refs/heads/main".to_owned())].into(),
                    project: "acme".into(),
                    actions: RepoActions::PUSH,
                },
            ],
        )
        .expect("client");
        let claims = |repo: &str, r: &str| {
            serde_json::json!({"repository": repo, "ref": r})
                .as_object()
                .cloned()
                .expect("object")
        };
        let main = v.permissions("https://ci", &claims("acme/app", "refs/heads/main"));
        assert_eq!(main.len(), 1);
        assert_eq!(main[0].access.len(), 2);
        let branch = v.permissions("https://ci", &claims("acme/app", "refs/heads/dev"));
        assert_eq!(branch[0].access.len(), 1);
        assert!(v
            .permissions("https://ci", &claims("other/app", "refs/heads/dev"))
            .is_empty());
        assert!(v
            .permissions("https://elsewhere", &claims("acme/app", "refs/heads/main"))
            .is_empty());
    }
}
