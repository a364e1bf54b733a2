//! HTTP basic authentication against argon2 hashes (or passwords from the environment) and
//! per-prefix roles. Comparisons are constant-time; nothing here logs a password or a hash.

use super::config::{ConfigError, GatewayConfig, Grant, Role};
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use subtle::ConstantTimeEq;

/// Hashes `password` with argon2id and a random salt, in the PHC format the configuration's
/// `password_hash` takes.
pub fn hash_password(password: &str) -> String {
    let salt_bytes: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
    let salt = argon2::password_hash::SaltString::encode_b64(&salt_bytes)
        .expect("16 bytes are a valid salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters hashes any password")
        .to_string()
}

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
        grants
            .iter()
            .filter(|grant| covers(&grant.prefix, name))
            .max_by_key(|grant| grant.prefix.len())
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
    /// No or unusable credentials, or wrong ones: 401.
    Unauthenticated,
}

pub(crate) struct Authenticator {
    users: Vec<User>,
    disabled: bool,
    /// Credentials already verified against their (slow) argon2 hash, as a keyed SHA-256 of
    /// user and password, so that each request does not pay argon2's cost again. The key is
    /// random per process.
    verified: Mutex<HashMap<String, [u8; 32]>>,
    cache_key: [u8; 32],
    /// A hash verified when the user is unknown, so that a wrong user name costs as much as
    /// a wrong password.
    decoy: String,
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
        Ok(Authenticator {
            users,
            disabled: config.auth_disabled,
            verified: Mutex::new(HashMap::new()),
            cache_key: std::array::from_fn(|_| fastrand::u8(..)),
            decoy: hash_password("decoy password that matches nothing"),
        })
    }

    /// Authenticates an `Authorization` header value.
    pub(crate) fn authenticate(&self, header: Option<&str>) -> AuthOutcome {
        if self.disabled {
            return AuthOutcome::Ok(Principal {
                name: "anonymous".into(),
                grants: None,
            });
        }
        let Some((user, password)) = header.and_then(parse_basic) else {
            return AuthOutcome::Unauthenticated;
        };
        // Look at every user, comparing names in constant time, so the time taken does not
        // say which names exist.
        let mut found: Option<&User> = None;
        for candidate in &self.users {
            if bool::from(candidate.name.as_bytes().ct_eq(user.as_bytes())) {
                found = Some(candidate);
            }
        }
        let Some(found) = found else {
            let _ = verify_hash(&self.decoy, &password);
            return AuthOutcome::Unauthenticated;
        };
        let ok = match &found.secret {
            Secret::Plain(expected) => {
                let given: [u8; 32] = Sha256::digest(password.as_bytes()).into();
                bool::from(given.ct_eq(expected))
            }
            Secret::Hash(hash) => {
                let fingerprint = self.fingerprint(&found.name, &password);
                let cached = self
                    .verified
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&found.name)
                    .copied();
                match cached {
                    Some(known) if bool::from(known.ct_eq(&fingerprint)) => true,
                    _ => {
                        let ok = verify_hash(hash, &password);
                        if ok {
                            self.verified
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(found.name.clone(), fingerprint);
                        }
                        ok
                    }
                }
            }
        };
        if ok {
            AuthOutcome::Ok(Principal {
                name: found.name.clone(),
                grants: Some(found.grants.clone()),
            })
        } else {
            AuthOutcome::Unauthenticated
        }
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

    #[test]
    fn basic_credentials_are_parsed_and_anything_else_is_refused() {
        let header = format!("Basic {}", BASE64.encode("ci:pa:ss"));
        assert_eq!(parse_basic(&header), Some(("ci".into(), "pa:ss".into())));
        assert_eq!(parse_basic("Bearer abc"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
    }
}
