//! OIDC login: tokens (JWTs) signed by a configured issuer, checked here, their claims mapped
//! to grants by the issuer's rules.
//!
//! What is trusted comes only from the configuration: the issuer is chosen by the token's
//! `iss` among the configured ones (no match: refused before any fetch), and its keys come
//! from its own discovery document (`<issuer>/.well-known/openid-configuration` →
//! `jwks_uri`) or from a file. Nothing in a token says where keys are fetched from: its
//! `jku`, `x5u`, `jwk` and `x5c` headers are never read. Only RS256, ES256 and EdDSA are
//! accepted, each only with a key of its own kind, so a public key can never be used as an
//! HMAC secret and `alg: none` is refused like any other unknown algorithm.
//!
//! Keys are cached. A token naming a key the cache lacks refreshes it, at most once per
//! `jwks_refresh_interval_secs`, so tokens with made-up key ids cannot make the gateway
//! hammer the issuer; every fetch is bounded by `fetch_timeout_secs` and
//! [`MAX_DOCUMENT_BYTES`], and follows no redirect.
//!
//! A principal logged in by token is named `<issuer>#<subject>`: the same subject under
//! another issuer is another principal (and owns none of the first one's locks).

use super::config::{
    ClaimRule, ConfigError, Grant, OidcIssuerConfig, TokenAlgorithm, is_loopback_host,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use bytes::Bytes;
use serde_json::Value;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The longest token accepted, in bytes. GitHub's and GitLab's are about 1 to 2 KiB.
pub(crate) const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// The largest discovery document or key set read from an issuer (or its file).
pub(crate) const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Keys kept from one key set; more are ignored.
const MAX_KEYS: usize = 64;
/// The longest subject accepted.
const MAX_SUBJECT_BYTES: usize = 512;

/// Why a token was refused: said in the audit line (never the token itself), not to the
/// client, which gets a plain 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenRefusal {
    /// Longer than [`MAX_TOKEN_BYTES`].
    TooLarge,
    /// Not three base64url parts with JSON header and claims, or a header with `crit`.
    Malformed,
    /// An algorithm other than the issuer's (`none` and HMAC among them).
    Algorithm,
    /// `iss` names no configured issuer.
    UnknownIssuer,
    /// The basic-auth user name is not the issuer's `username`.
    Username,
    /// Past `exp` (plus the leeway), or without `exp`.
    Expired,
    /// Before `nbf` or `iat` (minus the leeway).
    NotYetValid,
    /// Not issued for the configured audience.
    Audience,
    /// No `sub`, or one that is empty, too long or not printable ASCII.
    Subject,
    /// The issuer's keys have none with the token's `kid` (and algorithm).
    UnknownKey,
    /// The signature does not verify.
    Signature,
    /// The token is valid but matches none of the issuer's rules.
    NoRule,
}

impl TokenRefusal {
    /// For the audit line.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TokenRefusal::TooLarge => "token too large",
            TokenRefusal::Malformed => "token malformed",
            TokenRefusal::Algorithm => "token algorithm not allowed",
            TokenRefusal::UnknownIssuer => "token issuer not configured",
            TokenRefusal::Username => "token sent with another user name",
            TokenRefusal::Expired => "token expired",
            TokenRefusal::NotYetValid => "token not yet valid",
            TokenRefusal::Audience => "token for another audience",
            TokenRefusal::Subject => "token subject unusable",
            TokenRefusal::UnknownKey => "token key unknown",
            TokenRefusal::Signature => "token signature invalid",
            TokenRefusal::NoRule => "token matches no rule",
        }
    }
}

/// Who a verified token is, and what its issuer's rules grant it.
#[derive(Debug, Clone)]
pub(crate) struct TokenIdentity {
    pub(crate) issuer: String,
    pub(crate) subject: String,
    pub(crate) grants: Vec<Grant>,
}

impl TokenIdentity {
    /// The principal's name: issuer and subject.
    pub(crate) fn principal_name(&self) -> String {
        format!("{}#{}", self.issuer, self.subject)
    }
}

/// Whether `candidate` has the shape of a compact JWS (three base64url parts, the first a
/// JSON object with `alg`): such a basic-auth password is taken as a token.
pub(crate) fn looks_like_token(candidate: &str) -> bool {
    let mut parts = candidate.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    BASE64URL
        .decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .is_some_and(|header| header.get("alg").is_some())
}

/// Checks tokens against the configured issuers.
pub(crate) struct OidcVerifier {
    issuers: Vec<IssuerKeys>,
}

impl OidcVerifier {
    /// Reads the `jwks_file` of every issuer that has one (a bad file fails start-up); the
    /// others are fetched when the first token arrives.
    pub(crate) fn new(configs: &[OidcIssuerConfig]) -> Result<Self, ConfigError> {
        let mut issuers = Vec::new();
        for (index, config) in configs.iter().enumerate() {
            let issuer = IssuerKeys::new(config.clone());
            if let Some(path) = &config.jwks_file {
                let keys = read_jwks_file(path).map_err(|message| ConfigError::Invalid {
                    field: format!("oidc[{index}].jwks_file"),
                    message,
                })?;
                issuer.store(keys);
            }
            issuers.push(issuer);
        }
        Ok(OidcVerifier { issuers })
    }

    /// Verifies `token`; `username` is the basic-auth user name it came with, if any.
    pub(crate) async fn verify(
        &self,
        token: &str,
        username: Option<&str>,
    ) -> Result<TokenIdentity, TokenRefusal> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenRefusal::TooLarge);
        }
        let parsed = ParsedToken::parse(token)?;
        // The issuer is picked among the configured ones by exact `iss`; an unknown one is
        // refused before anything is fetched.
        let issuer_name = parsed
            .claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(TokenRefusal::UnknownIssuer)?;
        let issuer = self
            .issuers
            .iter()
            .find(|issuer| issuer.config.issuer == issuer_name)
            .ok_or(TokenRefusal::UnknownIssuer)?;
        issuer.verify(&parsed, username).await
    }
}

/// A compact JWS split and decoded, not yet verified.
struct ParsedToken {
    /// `<header>.<claims>` as sent: what the signature covers.
    signed: String,
    algorithm: TokenAlgorithm,
    kid: Option<String>,
    claims: serde_json::Map<String, Value>,
    signature: Vec<u8>,
}

impl ParsedToken {
    fn parse(token: &str) -> Result<Self, TokenRefusal> {
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenRefusal::Malformed);
        };
        let decode = |part: &str| BASE64URL.decode(part).map_err(|_| TokenRefusal::Malformed);
        let object = |bytes: Vec<u8>| match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(TokenRefusal::Malformed),
        };
        let header_map = object(decode(header)?)?;
        // Extensions the token says must be understood: none are.
        if header_map.contains_key("crit") {
            return Err(TokenRefusal::Malformed);
        }
        // Only the three asymmetric algorithms; `none`, `HS256`… are refused here, whatever
        // key they name.
        let algorithm = match header_map.get("alg").and_then(Value::as_str) {
            Some("RS256") => TokenAlgorithm::RS256,
            Some("ES256") => TokenAlgorithm::ES256,
            Some("EdDSA") => TokenAlgorithm::EdDSA,
            _ => return Err(TokenRefusal::Algorithm),
        };
        let kid = match header_map.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(TokenRefusal::Malformed),
        };
        Ok(ParsedToken {
            signed: format!("{header}.{claims}"),
            algorithm,
            kid,
            claims: object(decode(claims)?)?,
            signature: decode(signature)?,
        })
    }
}

/// The cached keys of one issuer.
struct KeyCache {
    keys: Arc<Vec<Jwk>>,
    /// When the keys were last read successfully.
    fetched_at: Option<Instant>,
    /// When a read was last started, successful or not: the refresh rate is bounded on it.
    last_attempt: Option<Instant>,
    /// The discovery document's `jwks_uri`, once read.
    jwks_uri: Option<String>,
}

/// One configured issuer and its keys.
struct IssuerKeys {
    config: OidcIssuerConfig,
    cache: Mutex<KeyCache>,
    /// One refresh at a time: tokens arriving during one wait for it rather than fetch too.
    refresh: tokio::sync::Mutex<()>,
}

impl IssuerKeys {
    fn new(config: OidcIssuerConfig) -> Self {
        IssuerKeys {
            config,
            cache: Mutex::new(KeyCache {
                keys: Arc::new(Vec::new()),
                fetched_at: None,
                last_attempt: None,
                jwks_uri: None,
            }),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeyCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn store(&self, keys: Vec<Jwk>) {
        let mut cache = self.lock();
        cache.keys = Arc::new(keys);
        cache.fetched_at = Some(Instant::now());
    }

    async fn verify(
        &self,
        token: &ParsedToken,
        username: Option<&str>,
    ) -> Result<TokenIdentity, TokenRefusal> {
        let config = &self.config;
        if !config.algorithms.contains(&token.algorithm) {
            return Err(TokenRefusal::Algorithm);
        }
        if let (Some(expected), Some(given)) = (&config.username, username)
            && expected != given
        {
            return Err(TokenRefusal::Username);
        }
        // The claims are checked before the keys are looked at, so that a token that could
        // not pass anyway never causes a fetch; none of this is trusted until the signature
        // below verifies.
        let claims = &token.claims;
        let now = unix_now();
        let leeway = config.leeway_secs as f64;
        let exp = claims
            .get("exp")
            .and_then(Value::as_f64)
            .ok_or(TokenRefusal::Expired)?;
        if now >= exp + leeway {
            return Err(TokenRefusal::Expired);
        }
        for not_before in ["nbf", "iat"] {
            match claims.get(not_before) {
                None => {}
                Some(value) => match value.as_f64() {
                    Some(time) if now + leeway >= time => {}
                    _ => return Err(TokenRefusal::NotYetValid),
                },
            }
        }
        let audience_ok = match claims.get("aud") {
            Some(Value::String(aud)) => *aud == config.audience,
            Some(Value::Array(auds)) => auds
                .iter()
                .any(|aud| aud.as_str() == Some(&config.audience)),
            _ => false,
        };
        if !audience_ok {
            return Err(TokenRefusal::Audience);
        }
        let subject = match claims.get("sub").and_then(Value::as_str) {
            Some(sub)
                if !sub.is_empty()
                    && sub.len() <= MAX_SUBJECT_BYTES
                    && sub.bytes().all(|b| (0x21..0x7f).contains(&b)) =>
            {
                sub.to_owned()
            }
            _ => return Err(TokenRefusal::Subject),
        };
        let key = self
            .key_for(token.kid.as_deref(), token.algorithm)
            .await
            .ok_or(TokenRefusal::UnknownKey)?;
        if !key.verify(token.algorithm, token.signed.as_bytes(), &token.signature) {
            return Err(TokenRefusal::Signature);
        }
        let grants: Vec<Grant> = config
            .rules
            .iter()
            .filter(|rule| rule_matches(rule, claims))
            .flat_map(|rule| rule.grants.iter().cloned())
            .collect();
        if grants.is_empty() {
            return Err(TokenRefusal::NoRule);
        }
        Ok(TokenIdentity {
            issuer: config.issuer.clone(),
            subject,
            grants,
        })
    }

    /// The key for a token's `kid` and algorithm: from the cache, or after a refresh when
    /// the cache lacks it (or is older than `jwks_max_age_secs`) and the last refresh began
    /// at least `jwks_refresh_interval_secs` ago.
    async fn key_for(&self, kid: Option<&str>, algorithm: TokenAlgorithm) -> Option<Jwk> {
        let max_age = Duration::from_secs(self.config.jwks_max_age_secs);
        let interval = Duration::from_secs(self.config.jwks_refresh_interval_secs);
        let lookup = |cache: &KeyCache| {
            let fresh = cache.fetched_at.is_some_and(|at| at.elapsed() < max_age);
            let due = cache.last_attempt.is_none_or(|at| at.elapsed() >= interval);
            (select_key(&cache.keys, kid, algorithm), fresh, due)
        };
        if let (Some(key), true, _) = lookup(&self.lock()) {
            return Some(key);
        }
        let _turn = self.refresh.lock().await;
        // Another token may have refreshed the keys while this one waited.
        let (found, fresh, due) = lookup(&self.lock());
        if found.is_some() && (fresh || !due) {
            return found;
        }
        if !due {
            return None;
        }
        self.lock().last_attempt = Some(Instant::now());
        match self.read_keys().await {
            Ok(keys) => {
                self.store(keys);
                select_key(&self.lock().keys, kid, algorithm)
            }
            Err(problem) => {
                tracing::warn!(issuer = %self.config.issuer, problem = %problem,
                    "cannot refresh the OIDC issuer's keys; keeping the ones held");
                // Keys held but past their age still serve while the issuer is unreachable.
                found
            }
        }
    }

    /// Reads the key set: from the file, or from the issuer's `jwks_uri`.
    async fn read_keys(&self) -> Result<Vec<Jwk>, String> {
        if let Some(path) = &self.config.jwks_file {
            return read_jwks_file(path);
        }
        let timeout = Duration::from_secs(self.config.fetch_timeout_secs);
        let cached_uri = self.lock().jwks_uri.clone();
        let jwks_uri = match cached_uri {
            Some(uri) => uri,
            None => {
                let uri = self.discover(timeout).await?;
                self.lock().jwks_uri = Some(uri.clone());
                uri
            }
        };
        let read = fetch(&jwks_uri, timeout)
            .await
            .and_then(|body| parse_jwks(&body))
            // An empty set would lock every token out until the next refresh: the keys held
            // are kept instead.
            .and_then(|keys| {
                if keys.is_empty() {
                    Err(format!("{jwks_uri}: no RS256, ES256 or EdDSA signing key"))
                } else {
                    Ok(keys)
                }
            });
        if read.is_err() {
            // The issuer may have moved its keys: ask its discovery document again next time.
            self.lock().jwks_uri = None;
        }
        read
    }

    /// The `jwks_uri` from the issuer's discovery document, which must name this issuer.
    async fn discover(&self, timeout: Duration) -> Result<String, String> {
        let issuer = &self.config.issuer;
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let body = fetch(&url, timeout).await?;
        let document: Value = serde_json::from_slice(&body)
            .map_err(|err| format!("the discovery document is not JSON: {err}"))?;
        if document.get("issuer").and_then(Value::as_str) != Some(issuer.as_str()) {
            return Err("the discovery document names another issuer".into());
        }
        let jwks_uri = document
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or("the discovery document has no jwks_uri")?;
        check_fetch_url(jwks_uri, issuer.starts_with("http://"))?;
        Ok(jwks_uri.to_owned())
    }
}

/// A `jwks_uri` must be https; http only for an http (loopback) issuer, and then on loopback.
fn check_fetch_url(url: &str, http_issuer: bool) -> Result<(), String> {
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|_| format!("jwks_uri {url:?} is not a URL"))?;
    let host = uri.host().unwrap_or("");
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => Ok(()),
        Some("http") if http_issuer && is_loopback_host(host) => Ok(()),
        _ => Err(format!(
            "jwks_uri {url:?} must be https (http only on loopback for a loopback issuer)"
        )),
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_secs_f64())
        .unwrap_or(0.0)
}

/// Whether every claim the rule names matches the token's.
fn rule_matches(rule: &ClaimRule, claims: &serde_json::Map<String, Value>) -> bool {
    rule.claims.iter().all(|(name, pattern)| {
        let value = match claims.get(name) {
            Some(Value::String(text)) => text.clone(),
            Some(Value::Bool(flag)) => flag.to_string(),
            Some(Value::Number(number)) => number.to_string(),
            _ => return false,
        };
        glob_matches(pattern, &value)
    })
}

/// `*` matches any run of characters (`/` included), `?` one character; anything else
/// itself.
pub(crate) fn glob_matches(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it has absorbed up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        // The pattern's `*` is a wildcard even where the text has a `*` too: it is looked at
        // first, or a `*` in a claim would be taken for a literal match and end the run.
        if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// A public key from a key set.
#[derive(Clone)]
struct Jwk {
    kid: Option<String>,
    key: PublicKey,
}

#[derive(Clone)]
enum PublicKey {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// The uncompressed point, `04 || x || y`.
    P256(Vec<u8>),
    Ed25519(Vec<u8>),
}

impl Jwk {
    fn algorithm(&self) -> TokenAlgorithm {
        match self.key {
            PublicKey::Rsa { .. } => TokenAlgorithm::RS256,
            PublicKey::P256(_) => TokenAlgorithm::ES256,
            PublicKey::Ed25519(_) => TokenAlgorithm::EdDSA,
        }
    }

    /// Verifies with this key, only under its own algorithm.
    fn verify(&self, algorithm: TokenAlgorithm, message: &[u8], signature: &[u8]) -> bool {
        use aws_lc_rs::signature::{
            ECDSA_P256_SHA256_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents,
            UnparsedPublicKey,
        };
        match (&self.key, algorithm) {
            (PublicKey::Rsa { n, e }, TokenAlgorithm::RS256) => RsaPublicKeyComponents { n, e }
                .verify(&RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
            (PublicKey::P256(point), TokenAlgorithm::ES256) => {
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, signature)
                    .is_ok()
            }
            (PublicKey::Ed25519(key), TokenAlgorithm::EdDSA) => {
                UnparsedPublicKey::new(&ED25519, key)
                    .verify(message, signature)
                    .is_ok()
            }
            _ => false,
        }
    }
}

/// The key for `kid` of `algorithm`'s kind; without a `kid`, the one key of that kind when
/// there is exactly one.
fn select_key(keys: &[Jwk], kid: Option<&str>, algorithm: TokenAlgorithm) -> Option<Jwk> {
    let mut candidates = keys
        .iter()
        .filter(|key| key.algorithm() == algorithm)
        .filter(|key| kid.is_none() || key.kid.as_deref() == kid);
    let first = candidates.next()?;
    // Two keys answering the same description: which one signed is not known.
    candidates.next().is_none().then(|| first.clone())
}

/// Parses a JWKS document, keeping the signing keys of the three algorithms' kinds and
/// skipping others (encryption keys, other curves).
fn parse_jwks(body: &[u8]) -> Result<Vec<Jwk>, String> {
    let document: Value =
        serde_json::from_slice(body).map_err(|err| format!("the key set is not JSON: {err}"))?;
    let keys = document
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("the key set has no keys array")?;
    let field = |key: &Value, name: &str| -> Option<Vec<u8>> {
        BASE64URL.decode(key.get(name)?.as_str()?).ok()
    };
    let mut parsed = Vec::new();
    for key in keys.iter().take(MAX_KEYS) {
        if key.get("use").is_some_and(|usage| usage != "sig") {
            continue;
        }
        let public = match key.get("kty").and_then(Value::as_str) {
            Some("RSA") => match (field(key, "n"), field(key, "e")) {
                (Some(n), Some(e)) => PublicKey::Rsa { n, e },
                _ => continue,
            },
            Some("EC") if key.get("crv").and_then(Value::as_str) == Some("P-256") => {
                match (field(key, "x"), field(key, "y")) {
                    (Some(x), Some(y)) if x.len() == 32 && y.len() == 32 => {
                        let mut point = vec![4];
                        point.extend(x);
                        point.extend(y);
                        PublicKey::P256(point)
                    }
                    _ => continue,
                }
            }
            Some("OKP") if key.get("crv").and_then(Value::as_str) == Some("Ed25519") => {
                match field(key, "x") {
                    Some(x) if x.len() == 32 => PublicKey::Ed25519(x),
                    _ => continue,
                }
            }
            _ => continue,
        };
        let jwk = Jwk {
            kid: key.get("kid").and_then(Value::as_str).map(str::to_owned),
            key: public,
        };
        // A key that says which algorithm it is for is used only for that one.
        if let Some(alg) = key.get("alg").and_then(Value::as_str)
            && alg != jwk.algorithm().as_str()
        {
            continue;
        }
        parsed.push(jwk);
    }
    Ok(parsed)
}

fn read_jwks_file(path: &std::path::Path) -> Result<Vec<Jwk>, String> {
    let size = std::fs::metadata(path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?
        .len();
    if size > MAX_DOCUMENT_BYTES as u64 {
        return Err(format!(
            "{} is larger than {MAX_DOCUMENT_BYTES} bytes",
            path.display()
        ));
    }
    let body =
        std::fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    let keys = parse_jwks(&body).map_err(|err| format!("{}: {err}", path.display()))?;
    if keys.is_empty() {
        return Err(format!(
            "{} holds no RS256, ES256 or EdDSA signing key",
            path.display()
        ));
    }
    Ok(keys)
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Empty<Bytes>,
>;

/// The one client for issuers, made on first use: TLS with the system's roots (rustls with
/// aws-lc-rs, as the SDK's), plain http for loopback issuers, no redirects followed.
fn http_client() -> Result<&'static HttpClient, String> {
    static CLIENT: OnceLock<Result<HttpClient, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            use tokio_rustls::rustls;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|err| format!("TLS: {err}"))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .build();
            Ok(
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build(connector),
            )
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// GETs `url`: a 200 answer's body of at most [`MAX_DOCUMENT_BYTES`], within `timeout`.
async fn fetch(url: &str, timeout: Duration) -> Result<Bytes, String> {
    use http_body_util::BodyExt as _;
    let client = http_client()?;
    let request = axum::http::Request::get(url)
        .header(axum::http::header::ACCEPT, "application/json")
        .header(axum::http::header::USER_AGENT, "s3state-gateway")
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|err| format!("{url}: {err}"))?;
    let work = async {
        let response = client
            .request(request)
            .await
            .map_err(|err| format!("{url}: {err}"))?;
        if response.status() != axum::http::StatusCode::OK {
            return Err(format!("{url}: answered {}", response.status()));
        }
        http_body_util::Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
            .collect()
            .await
            .map(|body| body.to_bytes())
            .map_err(|err| format!("{url}: {err} (at most {MAX_DOCUMENT_BYTES} bytes are read)"))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("{url}: no answer within {timeout:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_runs_and_single_characters() {
        assert!(glob_matches("acme/*", "acme/infra"));
        assert!(glob_matches("acme/*", "acme/a/b"));
        assert!(!glob_matches("acme/*", "acme"));
        assert!(!glob_matches("acme/*", "acmex/infra"));
        assert!(glob_matches("refs/heads/release-?", "refs/heads/release-1"));
        assert!(!glob_matches(
            "refs/heads/release-?",
            "refs/heads/release-10"
        ));
        assert!(glob_matches("*-prod", "eu-prod"));
        assert!(glob_matches("a*b*c", "a-b-b-c"));
        assert!(!glob_matches("a*b*c", "a-b-b-d"));
        assert!(glob_matches("main", "main"));
        assert!(!glob_matches("main", "main2"));
        assert!(!glob_matches("main", "mai"));
    }

    /// A `*` or `?` in a token's claim is an ordinary character: only the rule's pattern has
    /// wildcards, and they still match it. (Found attacking issue 26: a `*` in the value was
    /// matched as a literal against the pattern's `*`, which then matched nothing more.)
    #[test]
    fn wildcards_in_the_value_are_ordinary_characters() {
        assert!(glob_matches("acme/*", "acme/*x"));
        assert!(glob_matches("*", "*x"));
        assert!(glob_matches("a*c", "a*bc"));
        assert!(glob_matches("a?c", "a*c"));
        assert!(!glob_matches("acme/infra", "acme/*"));
        assert!(!glob_matches("acme/?", "acme/*x"));
        assert!(!glob_matches("a", "?"));
    }

    #[test]
    fn rules_need_every_claim_and_compare_booleans_as_written() {
        let rule = ClaimRule {
            claims: [
                ("project_path".to_owned(), "acme/*".to_owned()),
                ("ref_protected".to_owned(), "true".to_owned()),
            ]
            .into(),
            grants: vec![],
        };
        let claims = |value: Value| value.as_object().unwrap().clone();
        assert!(rule_matches(
            &rule,
            &claims(serde_json::json!({"project_path": "acme/infra", "ref_protected": "true"}))
        ));
        assert!(rule_matches(
            &rule,
            &claims(serde_json::json!({"project_path": "acme/infra", "ref_protected": true}))
        ));
        assert!(!rule_matches(
            &rule,
            &claims(serde_json::json!({"project_path": "acme/infra", "ref_protected": false}))
        ));
        assert!(!rule_matches(
            &rule,
            &claims(serde_json::json!({"project_path": "acme/infra"}))
        ));
        assert!(!rule_matches(
            &rule,
            &claims(serde_json::json!({"project_path": ["acme/infra"], "ref_protected": true}))
        ));
    }

    #[test]
    fn only_jws_shaped_passwords_are_taken_for_tokens() {
        let header = BASE64URL.encode(br#"{"alg":"RS256"}"#);
        assert!(looks_like_token(&format!("{header}.e30.c2ln")));
        assert!(!looks_like_token("a password"));
        assert!(!looks_like_token("a.b.c"));
        assert!(!looks_like_token(&format!("{header}.e30")));
        assert!(!looks_like_token(&format!("{header}.e30.c2ln.x")));
    }

    #[test]
    fn jwks_urls_are_https_or_loopback_http_for_a_loopback_issuer() {
        assert!(check_fetch_url("https://issuer.example/keys", false).is_ok());
        assert!(check_fetch_url("http://127.0.0.1:9/keys", true).is_ok());
        assert!(check_fetch_url("http://127.0.0.1:9/keys", false).is_err());
        assert!(check_fetch_url("http://evil.example/keys", true).is_err());
        assert!(check_fetch_url("file:///etc/passwd", false).is_err());
    }
}
