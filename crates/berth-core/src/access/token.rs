//! Bearer tokens of the Docker registry token specification: JWTs signed by the token
//! service (`/service/token`) and checked on every `/v2` request.
//!
//! The signing key is ES256 (ECDSA P-256), generated on first start and kept in the metadata
//! store's settings so that every instance of a fleet signs and verifies with the same key;
//! or ES256/RS256 from a PEM file named in the configuration.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde::{Deserialize, Serialize};

use crate::Error;
use berth_oci::scope::Scope;

/// One entry of a token's `access` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    /// `repository` or `registry`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The repository name, or `catalog`.
    pub name: String,
    /// The granted actions.
    pub actions: Vec<String>,
}

impl AccessEntry {
    /// The claim entry for a granted scope.
    pub fn from_scope(scope: &Scope) -> Self {
        match scope {
            Scope::Repository { name, actions } => AccessEntry {
                kind: "repository".into(),
                name: name.to_string(),
                actions: actions.names().into_iter().map(String::from).collect(),
            },
            Scope::Catalog => AccessEntry {
                kind: "registry".into(),
                name: "catalog".into(),
                actions: vec!["*".into()],
            },
        }
    }

    /// The scope this entry grants, if Berth knows it.
    pub fn to_scope(&self) -> Option<Scope> {
        Scope::from_parts(
            &self.kind,
            &self.name,
            self.actions.iter().map(String::as_str),
        )
    }
}

/// The claims of a Berth token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Who issued it (the configured issuer).
    pub iss: String,
    /// Whom it was issued to: the principal's name (`Principal::name`).
    pub sub: String,
    /// The service it is for.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not before, seconds since the epoch.
    pub nbf: u64,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// A unique id.
    pub jti: String,
    /// What it grants.
    pub access: Vec<AccessEntry>,
    /// Berth's reference to the principal (`user:<id>`, `robot:<id>`...), checked again on
    /// each request so a deleted user's or disabled robot's token stops working.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "berth_principal"
    )]
    pub principal: Option<String>,
}

impl Claims {
    /// The scopes the token grants (entries Berth does not know are dropped).
    pub fn scopes(&self) -> Vec<Scope> {
        self.access
            .iter()
            .filter_map(AccessEntry::to_scope)
            .collect()
    }
}

/// The key pair tokens are signed and checked with.
pub struct TokenKeys {
    alg: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// The prefix of a stored generated key (the PKCS#8 DER follows, base64).
const STORED_ES256: &str = "ES256:";

fn key_id(public: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(&sha2::Sha256::digest(public)[..12])
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn internal(what: &str) -> impl Fn(String) -> Error + '_ {
    move |e| Error::Internal(format!("{what}: {e}"))
}

impl TokenKeys {
    /// A fresh ES256 key, in the form [`TokenKeys::from_stored`] reads back.
    ///
    /// # Errors
    /// If the system's random source fails.
    pub fn generate() -> Result<String, Error> {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|e| Error::Internal(format!("generating the token key: {e}")))?;
        Ok(format!("{STORED_ES256}{}", b64(pkcs8.as_ref())))
    }

    /// The key stored by [`TokenKeys::generate`].
    ///
    /// # Errors
    /// If it is not such a key.
    pub fn from_stored(stored: &str) -> Result<Self, Error> {
        let der = stored
            .strip_prefix(STORED_ES256)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .ok_or_else(|| Error::Internal("the stored token key is not readable".into()))?;
        Self::from_ec_pkcs8(&der)
    }

    fn from_ec_pkcs8(der: &[u8]) -> Result<Self, Error> {
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new())
                .map_err(|e| Error::Internal(format!("reading the EC token key: {e}")))?;
        let public = pair.public_key().as_ref();
        Ok(Self {
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(der),
            decoding: DecodingKey::from_ec_der(public),
            kid: key_id(public),
        })
    }

    fn from_rsa_pkcs1(der: &[u8]) -> Result<Self, Error> {
        let pair = RsaKeyPair::from_der(der)
            .map_err(|e| Error::Internal(format!("reading the RSA token key: {e}")))?;
        let public = pair.public().as_ref();
        Ok(Self {
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(der),
            decoding: DecodingKey::from_rsa_der(public),
            kid: key_id(public),
        })
    }

    /// A key from a PEM file's contents: an EC P-256 key in PKCS#8 (ES256), or an RSA key in
    /// PKCS#1 (RS256).
    ///
    /// # Errors
    /// If the PEM holds no such key.
    pub fn from_pem(pem: &[u8]) -> Result<Self, Error> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::PrivateKeyDer;
        let key = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|e| Error::Internal(format!("reading the token key PEM: {e}")))?;
        match key {
            // jsonwebtoken signs RS256 with a PKCS#1 key, so a PKCS#8 file must be EC.
            PrivateKeyDer::Pkcs8(der) => Self::from_ec_pkcs8(der.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(der) => Self::from_rsa_pkcs1(der.secret_pkcs1_der()),
            _ => Err(Error::Internal(
                "the token key must be EC P-256 (PKCS#8) or RSA (PKCS#1)".into(),
            )),
        }
    }

    /// Sign `claims`.
    ///
    /// # Errors
    /// If signing fails.
    pub fn sign(&self, claims: &Claims) -> Result<String, Error> {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| e.to_string())
            .map_err(internal("signing a token"))
    }

    /// Check a token's signature, expiry, issuer and audience, and return its claims.
    ///
    /// # Errors
    /// [`Error::Unauthorized`] with the reason, for any token that does not hold.
    pub fn verify(&self, token: &str, issuer: &str, service: &str) -> Result<Claims, Error> {
        let mut v = Validation::new(self.alg);
        v.set_issuer(&[issuer]);
        v.set_audience(&[service]);
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        v.validate_nbf = true;
        v.leeway = 30;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .map(|d| d.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                let why = match e.kind() {
                    K::ExpiredSignature => "the token has expired",
                    K::ImmatureSignature => "the token is not valid yet",
                    K::InvalidAudience => "the token is for another service",
                    K::InvalidIssuer => "the token was issued by someone else",
                    K::InvalidSignature | K::InvalidAlgorithm => {
                        "the token's signature is not valid"
                    }
                    _ => "the token is malformed",
                };
                Error::Unauthorized(why.into())
            })
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// A random identifier of `bytes` random bytes, hex.
pub(crate) fn random_hex(bytes: usize) -> Result<String, Error> {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|e| Error::Internal(format!("random source: {e}")))?;
    Ok(hex::encode(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_oci::scope::RepoActions;

    fn claims(exp_in: i64) -> Claims {
        let now = now_secs();
        Claims {
            iss: "berth".into(),
            sub: "u:1:alice".into(),
            aud: "registry".into(),
            exp: (now as i64 + exp_in) as u64,
            nbf: now - 1,
            iat: now,
            jti: "x".into(),
            access: vec![AccessEntry::from_scope(
                &Scope::parse("repository:a/b:pull").expect("valid"),
            )],
            principal: Some("user:1".into()),
        }
    }

    #[test]
    fn signs_and_verifies() {
        let keys = TokenKeys::from_stored(&TokenKeys::generate().expect("key")).expect("read");
        let t = keys.sign(&claims(300)).expect("sign");
        let c = keys.verify(&t, "berth", "registry").expect("valid");
        assert_eq!(c.sub, "u:1:alice");
        assert_eq!(
            c.scopes(),
            vec![Scope::Repository {
                name: "a/b".parse().expect("valid"),
                actions: RepoActions::PULL,
            }]
        );
    }

    #[test]
    fn refuses_bad_tokens() {
        let keys = TokenKeys::from_stored(&TokenKeys::generate().expect("key")).expect("read");
        let other = TokenKeys::from_stored(&TokenKeys::generate().expect("key")).expect("read");
        let good = keys.sign(&claims(300)).expect("sign");
        let reason = |r: Result<Claims, Error>| match r {
            Err(Error::Unauthorized(m)) => m,
            other => panic!("expected unauthorized, got {other:?}"),
        };
        assert!(reason(keys.verify(
            &keys.sign(&claims(-120)).expect("sign"),
            "berth",
            "registry"
        ))
        .contains("expired"));
        assert!(reason(keys.verify(&good, "berth", "other")).contains("another service"));
        assert!(reason(keys.verify(&good, "evil", "registry")).contains("someone else"));
        assert!(reason(other.verify(&good, "berth", "registry")).contains("signature"));
        // Tamper with the payload: widen the grant.
        let parts: Vec<&str> = good.split('.').collect();
        let mut c = claims(300);
        c.access[0].actions = vec!["pull".into(), "push".into()];
        let forged_payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&c).expect("json"));
        let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert!(reason(keys.verify(&forged, "berth", "registry")).contains("signature"));
        assert!(reason(keys.verify("not.a.token", "berth", "registry")).contains("malformed"));
    }
}
