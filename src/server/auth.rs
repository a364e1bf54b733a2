//! HTTP basic authentication against argon2 hashes (or passwords from the environment) and
//! per-prefix roles. Comparisons are constant-time; nothing here logs a password or a hash.
//!
//! argon2 is slow by design, so a password check runs on a blocking thread, at most
//! `limits.max_concurrent_logins` at once; an unknown user name costs a check against a decoy
//! hash, as long as a wrong password; and a client address with more than
//! `limits.failed_logins_per_minute` failures is answered 429 without a check until its minute
//! is over. Credentials verified once are remembered for 10 minutes (a keyed SHA-256, one per
//! configured user, never the password), so a client that has
//! logged in is served at once, even from an address being throttled.
//!
//! OIDC tokens (see `oidc.rs`) arrive as `Authorization: Bearer <token>`, or as the password
//! of basic authentication (Terraform's `TF_HTTP_PASSWORD`): a password shaped like a token
//! (a compact JWS) is always taken as one, whatever the user name, so the path a login takes
//! says nothing about which user names exist. Checking a token is cheap: a valid one is
//! accepted even from a throttled address; a refused one counts as a failed login.

use super::config::{ConfigError, GatewayConfig, Grant, Role};
use super::oidc::{OidcVerifier, TokenRefusal, looks_like_token};
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// Hashes `password` with argon2id and a random salt, in the PHC format the configuration's
/// `password_hash` takes.
pub fn hash_password(password: &str) -> String {
    let salt_bytes: [u8; 16] = random_bytes();
    let salt = argon2::password_hash::SaltString::encode_b64(&salt_bytes)
        .expect("16 bytes are a valid salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters hashes any password")
        .to_string()
}

/// Bytes from the operating system's secure generator: the verified-credentials cache's key
/// must not be guessable (fastrand, a fast non-cryptographic generator, was used before), and
/// salts are drawn the same way.
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system's secure random generator");
    bytes
}

/// How long credentials verified against their argon2 hash are taken without checking again.
const VERIFIED_FOR: Duration = Duration::from_secs(600);

/// The window failed logins are counted in, per client address.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

enum Secret {
    /// A PHC argon2 hash.
    Hash(String),
    /// The SHA-256 of a password read from the environment.
    Plain([u8; 32]),
}

struct User {
    name: String,
    secret: Secret,
    grants: Vec<Grant>,
}

/// Who a request is.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    pub(crate) name: String,
    grants: Option<Vec<Grant>>,
}

impl Principal {
    /// The role this principal has on state `name` (the longest matching prefix), if any.
    pub(crate) fn role_on(&self, name: &str) -> Option<Role> {
        let Some(grants) = &self.grants else {
            return Some(Role::Admin);
        };
        // Among grants of the same prefix (a token matching several rules), the highest role.
        grants
            .iter()
            .filter(|grant| covers(&grant.prefix, name))
            .max_by_key(|grant| (grant.prefix.len(), grant.role))
            .map(|grant| grant.role)
    }
}

fn covers(prefix: &str, name: &str) -> bool {
    prefix.is_empty()
        || name == prefix
        || (name.starts_with(prefix) && name.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// The outcome of authenticating one request.
pub(crate) enum AuthOutcome {
    Ok(Principal),
    /// No or unusable credentials: 401.
    Missing,
    /// Wrong credentials (an unknown user or a wrong password): 401.
    Unauthenticated,
    /// A token that is refused, and why (for the audit line): 401.
    TokenRefused(TokenRefusal),
    /// Too many failed logins from this client address: 429, retry after this many seconds.
    Throttled(u64),
}

pub(crate) struct Authenticator {
    users: Vec<User>,
    /// The trusted OIDC issuers, when any is configured.
    oidc: Option<OidcVerifier>,
    disabled: bool,
    /// Credentials already verified against their (slow) argon2 hash, as a keyed SHA-256 of
    /// user and password, so that each request does not pay argon2's cost again. The key is
    /// random per process. At most one per configured user (only a user's right password is
    /// remembered), each for `verified_for` after its argon2 check, so the cache is bounded
    /// and a password is checked against its hash again at least that often.
    verified: Mutex<HashMap<String, ([u8; 32], Instant)>>,
    verified_for: Duration,
    cache_key: [u8; 32],
    /// A hash verified when the user is unknown, so that a wrong user name costs as much as
    /// a wrong password.
    decoy: String,
    /// Password checks running at once.
    checks: Arc<tokio::sync::Semaphore>,
    /// Argon2 verifications made: every login not already verified makes exactly one, so
    /// the time taken tells nothing about which user names exist.
    argon2_checks: std::sync::atomic::AtomicU64,
    /// Failed logins by client address: when the window started, and how many.
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    failures_allowed: u32,
}

impl Authenticator {
    pub(crate) fn new(config: &GatewayConfig) -> Result<Self, ConfigError> {
        let mut users = Vec::new();
        for user in &config.users {
            let secret = match (&user.password_hash, &user.password_env) {
                (Some(hash), _) => Secret::Hash(hash.clone()),
                (None, Some(var)) => {
                    let value = std::env::var(var).map_err(|_| ConfigError::Invalid {
                        field: format!("users.{}.password_env", user.name),
                        message: format!("the environment variable {var} is not set"),
                    })?;
                    Secret::Plain(Sha256::digest(value.as_bytes()).into())
                }
                (None, None) => {
                    return Err(ConfigError::Invalid {
                        field: format!("users.{}", user.name),
                        message: "no password_hash or password_env".into(),
                    });
                }
            };
            users.push(User {
                name: user.name.clone(),
                secret,
                grants: user.grants.clone(),
            });
        }
        let oidc = if config.oidc.is_empty() {
            None
        } else {
            Some(OidcVerifier::new(&config.oidc)?)
        };
        Ok(Authenticator {
            users,
            oidc,
            disabled: config.auth_disabled,
            verified: Mutex::new(HashMap::new()),
            verified_for: VERIFIED_FOR,
            cache_key: random_bytes(),
            decoy: hash_password("decoy password that matches nothing"),
            checks: Arc::new(tokio::sync::Semaphore::new(
                config.limits.max_concurrent_logins.max(1),
            )),
            failures: Mutex::new(HashMap::new()),
            failures_allowed: config.limits.failed_logins_per_minute,
            argon2_checks: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Authenticates an `Authorization` header value from `client`.
    pub(crate) async fn authenticate(
        &self,
        header: Option<&str>,
        client: Option<IpAddr>,
    ) -> AuthOutcome {
        if self.disabled {
            return AuthOutcome::Ok(Principal {
                name: "anonymous".into(),
                grants: None,
            });
        }
        if let Some(token) = header.and_then(parse_bearer) {
            return self.token_login(token, None, client).await;
        }
        let Some((user, password)) = header.and_then(parse_basic) else {
            return AuthOutcome::Missing;
        };
        if looks_like_token(&password) {
            return self.token_login(&password, Some(&user), client).await;
        }
        // Look at every user, comparing names in constant time, so the time taken does not
        // say which names exist.
        let mut found: Option<&User> = None;
        for candidate in &self.users {
            if bool::from(candidate.name.as_bytes().ct_eq(user.as_bytes())) {
                found = Some(candidate);
            }
        }
        // Credentials verified before: at once, even from a throttled address.
        let fingerprint = found.map(|found| self.fingerprint(&found.name, &password));
        if let (Some(found), Some(fingerprint)) = (found, fingerprint) {
            let cached = self
                .verified
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&found.name)
                .copied();
            let fresh = cached.filter(|(_, since)| since.elapsed() < self.verified_for);
            if fresh.is_some_and(|(known, _)| bool::from(known.ct_eq(&fingerprint))) {
                return self.ok(found);
            }
        }
        if let Some(retry_after) = client.and_then(|client| self.throttled(client)) {
            return AuthOutcome::Throttled(retry_after);
        }
        let ok = match found.map(|found| &found.secret) {
            Some(Secret::Plain(expected)) => {
                // A password from the environment is compared in microseconds; without this
                // check against the decoy, a wrong password for such a user would answer far
                // sooner than an unknown user (argon2), telling which names exist.
                let _ = self.check(self.decoy.clone(), password.clone()).await;
                let given: [u8; 32] = Sha256::digest(password.as_bytes()).into();
                bool::from(given.ct_eq(expected))
            }
            // An unknown user is checked against the decoy, as long as a wrong password.
            Some(Secret::Hash(hash)) => self.check(hash.clone(), password).await,
            None => {
                let _ = self.check(self.decoy.clone(), password).await;
                false
            }
        };
        match (ok, found, fingerprint) {
            (true, Some(found), Some(fingerprint)) => {
                self.verified
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(found.name.clone(), (fingerprint, Instant::now()));
                self.ok(found)
            }
            _ => {
                if let Some(client) = client {
                    self.failed(client);
                }
                AuthOutcome::Unauthenticated
            }
        }
    }

    /// Logs in with an OIDC token; `user` is the basic-auth user name it came with.
    async fn token_login(
        &self,
        token: &str,
        user: Option<&str>,
        client: Option<IpAddr>,
    ) -> AuthOutcome {
        let Some(oidc) = &self.oidc else {
            if let Some(client) = client {
                self.failed(client);
            }
            return AuthOutcome::TokenRefused(TokenRefusal::UnknownIssuer);
        };
        match oidc.verify(token, user).await {
            Ok(identity) => AuthOutcome::Ok(Principal {
                name: identity.principal_name(),
                grants: Some(identity.grants),
            }),
            Err(refusal) => {
                if let Some(client) = client {
                    if let Some(retry_after) = self.throttled(client) {
                        return AuthOutcome::Throttled(retry_after);
                    }
                    self.failed(client);
                }
                AuthOutcome::TokenRefused(refusal)
            }
        }
    }

    fn ok(&self, found: &User) -> AuthOutcome {
        AuthOutcome::Ok(Principal {
            name: found.name.clone(),
            grants: Some(found.grants.clone()),
        })
    }

    /// One argon2 check, on a blocking thread, when a check slot is free.
    async fn check(&self, hash: String, password: String) -> bool {
        let Ok(_slot) = Arc::clone(&self.checks).acquire_owned().await else {
            return false;
        };
        self.argon2_checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::task::spawn_blocking(move || verify_hash(&hash, &password))
            .await
            .unwrap_or(false)
    }

    /// Seconds until `client` may try again, when it has used up its failed logins.
    fn throttled(&self, client: IpAddr) -> Option<u64> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let (since, count) = failures.get(&client)?;
        let elapsed = since.elapsed();
        (*count >= self.failures_allowed && elapsed < FAILURE_WINDOW)
            .then(|| (FAILURE_WINDOW - elapsed).as_secs().max(1))
    }

    fn failed(&self, client: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        // Forget addresses whose window is over, so that the table stays small.
        if failures.len() > 10_000 {
            failures.retain(|_, (since, _)| since.elapsed() < FAILURE_WINDOW);
        }
        let entry = failures.entry(client).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= FAILURE_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    fn fingerprint(&self, user: &str, password: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.cache_key);
        hasher.update(user.as_bytes());
        hasher.update([0]);
        hasher.update(password.as_bytes());
        hasher.finalize().into()
    }
}

fn verify_hash(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// `Bearer <token>` → the token.
fn parse_bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// `Basic base64(user:password)` → (user, password).
fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = BASE64.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_matching_prefix_decides_and_matches_whole_segments() {
        let principal = Principal {
            name: "u".into(),
            grants: Some(vec![
                Grant {
                    prefix: String::new(),
                    role: Role::Read,
                },
                Grant {
                    prefix: "team-a".into(),
                    role: Role::Write,
                },
                Grant {
                    prefix: "team-a/prod".into(),
                    role: Role::Read,
                },
            ]),
        };
        assert_eq!(principal.role_on("other"), Some(Role::Read));
        assert_eq!(principal.role_on("team-a"), Some(Role::Write));
        assert_eq!(principal.role_on("team-a/dev"), Some(Role::Write));
        assert_eq!(principal.role_on("team-ab"), Some(Role::Read));
        assert_eq!(principal.role_on("team-a/prod/db"), Some(Role::Read));
    }

    /// From issue 23, item 10: a wrong password for a user whose password comes from the
    /// environment was answered in about 1 ms, an unknown user in about 35 ms (argon2 on the
    /// decoy), so user names could be told by timing. Every login not already verified now
    /// makes exactly one argon2 verification, whoever it names. (Counted, not timed.)
    #[tokio::test]
    async fn every_unverified_login_costs_one_argon2_check_whoever_it_names() {
        use crate::server::config::UserConfig;
        let var = "S3STATE_TEST_AUTH_PASSWORD_ITEM_10";
        // SAFETY: set once, before any thread reads it; no other test uses this variable.
        unsafe { std::env::set_var(var, "the right password, long enough") };
        let config = GatewayConfig {
            users: vec![UserConfig {
                name: "env-user".into(),
                password_hash: None,
                password_env: Some(var.into()),
                grants: vec![],
            }],
            ..GatewayConfig::default()
        };
        let auth = Authenticator::new(&config).unwrap();
        let checks = || {
            auth.argon2_checks
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        let basic = |user: &str, password: &str| {
            format!("Basic {}", BASE64.encode(format!("{user}:{password}")))
        };
        for (user, password) in [("env-user", "wrong"), ("nobody", "wrong")] {
            let before = checks();
            let outcome = auth.authenticate(Some(&basic(user, password)), None).await;
            assert!(matches!(outcome, AuthOutcome::Unauthenticated), "{user}");
            assert_eq!(checks() - before, 1, "{user}: one argon2 check");
        }
        let right = basic("env-user", "the right password, long enough");
        assert!(matches!(
            auth.authenticate(Some(&right), None).await,
            AuthOutcome::Ok(_)
        ));
        let before = checks();
        assert!(matches!(
            auth.authenticate(Some(&right), None).await,
            AuthOutcome::Ok(_)
        ));
        assert_eq!(
            checks(),
            before,
            "verified credentials are not checked again"
        );

        // Remembered for a while only: past `verified_for`, checked against the hash again.
        let mut auth = auth;
        auth.verified_for = Duration::ZERO;
        let before = auth
            .argon2_checks
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(matches!(
            auth.authenticate(Some(&right), None).await,
            AuthOutcome::Ok(_)
        ));
        assert_eq!(
            auth.argon2_checks
                .load(std::sync::atomic::Ordering::Relaxed)
                - before,
            1,
            "an expired verification is checked again"
        );
    }

    #[test]
    fn basic_credentials_are_parsed_and_anything_else_is_refused() {
        let header = format!("Basic {}", BASE64.encode("ci:pa:ss"));
        assert_eq!(parse_basic(&header), Some(("ci".into(), "pa:ss".into())));
        assert_eq!(parse_basic("Bearer abc"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
    }
}
