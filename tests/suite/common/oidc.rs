//! A test OIDC issuer on 127.0.0.1: keys generated here (RSA 2048, P-256, Ed25519), its
//! discovery document and key set served over plain http, the key-set fetches counted, and
//! tokens signed as GitHub Actions' look (and, for the attack tables, as they must not).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The audience test tokens are issued for.
pub const AUDIENCE: &str = "s3state-test";

/// Which key signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    RS256,
    ES256,
    EdDSA,
}

impl Alg {
    pub const ALL: [Alg; 3] = [Alg::RS256, Alg::ES256, Alg::EdDSA];

    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::ES256 => "ES256",
            Alg::EdDSA => "EdDSA",
        }
    }

    /// The `kid` of the issuer's key of this kind.
    pub fn kid(self) -> &'static str {
        match self {
            Alg::RS256 => "rsa-1",
            Alg::ES256 => "ec-1",
            Alg::EdDSA => "ed-1",
        }
    }
}

/// Keys of the three kinds.
pub struct Keys {
    pub rsa: aws_lc_rs::rsa::KeyPair,
    pub ec: EcdsaKeyPair,
    pub ed: Ed25519KeyPair,
}

impl Keys {
    pub fn generate() -> Keys {
        Keys {
            rsa: aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap(),
            ec: EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
            ed: Ed25519KeyPair::generate().unwrap(),
        }
    }

    /// Signs `message` with the key of `alg`'s kind.
    pub fn sign(&self, alg: Alg, message: &[u8]) -> Vec<u8> {
        match alg {
            Alg::RS256 => {
                let mut out = vec![0; self.rsa.public_modulus_len()];
                self.rsa
                    .sign(
                        &signature::RSA_PKCS1_SHA256,
                        &SystemRandom::new(),
                        message,
                        &mut out,
                    )
                    .unwrap();
                out
            }
            Alg::ES256 => self
                .ec
                .sign(&SystemRandom::new(), message)
                .unwrap()
                .as_ref()
                .to_vec(),
            Alg::EdDSA => self.ed.sign(message).as_ref().to_vec(),
        }
    }

    /// The public key of `alg`'s kind as a JWK named `kid`.
    pub fn jwk(&self, alg: Alg, kid: &str) -> Value {
        match alg {
            Alg::RS256 => {
                let (n, e) = rsa_components(self.rsa.public_key().as_ref());
                json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                    "n": B64.encode(n), "e": B64.encode(e)})
            }
            Alg::ES256 => {
                let point = self.ec.public_key().as_ref();
                json!({"kty": "EC", "kid": kid, "crv": "P-256", "use": "sig",
                    "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])})
            }
            Alg::EdDSA => json!({"kty": "OKP", "kid": kid, "crv": "Ed25519",
                "x": B64.encode(self.ed.public_key().as_ref())}),
        }
    }

    /// The RSA public key's bytes (PKCS#1 DER): what an HMAC-confusion attacker would use
    /// as the secret.
    pub fn rsa_public_der(&self) -> Vec<u8> {
        self.rsa.public_key().as_ref().to_vec()
    }
}

/// The modulus and exponent of a PKCS#1 `RSAPublicKey` (DER: a SEQUENCE of two INTEGERs),
/// without the sign byte.
fn rsa_components(der: &[u8]) -> (&[u8], &[u8]) {
    // One DER element at `at`: its content, and where the next one starts.
    fn element(der: &[u8], at: usize) -> (&[u8], usize) {
        let (length, header) = match der[at + 1] {
            short if short < 0x80 => (short as usize, 2),
            long => {
                let bytes = (long & 0x7f) as usize;
                let length = der[at + 2..at + 2 + bytes]
                    .iter()
                    .fold(0usize, |acc, &b| (acc << 8) | b as usize);
                (length, 2 + bytes)
            }
        };
        let start = at + header;
        (&der[start..start + length], start + length)
    }
    let (sequence, _) = element(der, 0);
    let (n, next) = element(sequence, 0);
    let (e, _) = element(sequence, next);
    let trim = |int: &[u8]| -> usize { int.iter().take_while(|&&b| b == 0).count() };
    (&n[trim(n)..], &e[trim(e)..])
}

/// A compact JWS of `header` and `claims`, signed by `keys` with `alg`.
pub fn sign_jws(keys: &Keys, alg: Alg, header: &Value, claims: &Value) -> String {
    let signed = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let signature = keys.sign(alg, signed.as_bytes());
    format!("{signed}.{}", B64.encode(signature))
}

/// `<header>.<claims>.<signature>` with these raw parts (for tokens no key signed).
pub fn raw_jws(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string()),
        B64.encode(signature)
    )
}

/// HS256 over `header.claims` with `secret`.
pub fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let signed = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, signed.as_bytes());
    format!("{signed}.{}", B64.encode(tag.as_ref()))
}

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A running issuer; dropping it stops it.
pub struct TestIssuer {
    /// `http://127.0.0.1:<port>`: the `iss` of its tokens.
    pub url: String,
    pub keys: Keys,
    /// The key set it publishes (a test may add keys: a rotation).
    published: Arc<Mutex<Value>>,
    jwks_fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestIssuer {
    /// Starts an issuer on a free loopback port, publishing its three keys.
    pub async fn start() -> TestIssuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let keys = Keys::generate();
        let published = Arc::new(Mutex::new(json!({
            "keys": Alg::ALL.map(|alg| keys.jwk(alg, alg.kid())),
        })));
        let jwks_fetches = Arc::new(AtomicUsize::new(0));
        let discovery = json!({
            "issuer": url,
            "jwks_uri": format!("{url}/keys"),
            "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
        });
        let router = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || {
                    let discovery = discovery.clone();
                    async move { axum::Json(discovery) }
                }),
            )
            .route(
                "/keys",
                axum::routing::get({
                    let published = Arc::clone(&published);
                    let fetches = Arc::clone(&jwks_fetches);
                    move || {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        let body = published.lock().unwrap().clone();
                        async move { axum::Json(body) }
                    }
                }),
            );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        TestIssuer {
            url,
            keys,
            published,
            jwks_fetches,
            task,
        }
    }

    /// How many times its key set was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Publishes `keys` as the whole key set.
    pub fn publish_set(&self, keys: Value) {
        *self.published.lock().unwrap() = keys;
    }

    /// Adds `jwk` to the published key set.
    pub fn publish(&self, jwk: Value) {
        self.published.lock().unwrap()["keys"]
            .as_array_mut()
            .unwrap()
            .push(jwk);
    }

    /// Claims as GitHub Actions' tokens carry them, for `repository` on `git_ref`, valid for
    /// five minutes.
    pub fn claims(&self, repository: &str, git_ref: &str) -> Value {
        let now = now();
        json!({
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": format!("repo:{repository}:ref:{git_ref}"),
            "repository": repository,
            "ref": git_ref,
            "iat": now,
            "nbf": now - 5,
            "exp": now + 300,
        })
    }

    /// `claims` signed with its key of `alg`'s kind, header naming that key.
    pub fn sign(&self, alg: Alg, claims: &Value) -> String {
        let header = json!({"alg": alg.name(), "kid": alg.kid(), "typ": "JWT"});
        sign_jws(&self.keys, alg, &header, claims)
    }

    /// A good token for `repository` on `git_ref`.
    pub fn token(&self, alg: Alg, repository: &str, git_ref: &str) -> String {
        self.sign(alg, &self.claims(repository, git_ref))
    }
}
