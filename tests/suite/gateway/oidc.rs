//! OIDC login (issue 26): tokens from a test issuer on loopback (keys generated here,
//! discovery and key set served over http), checked by the gateway against its configured
//! issuers and mapped to grants by claim rules. The bad-token table, good tokens of each
//! algorithm as `Bearer` and as the basic-auth password, the bounded key refresh, a subject
//! of one issuer not being the same principal under another, and a real Terraform applying
//! with `TF_HTTP_PASSWORD` set to a token.

use crate::common;
use crate::common::gateway::{
    self, Running, WRITER, Workdir, key, lock_body, send, send_with, state_body,
};
use crate::common::oidc::{AUDIENCE, Alg, Keys, TestIssuer, hs256, now, raw_jws, sign_jws};
use s3state::server::{ClaimRule, GatewayConfig, Grant, OidcIssuerConfig, Role};
use serde_json::json;

const REPO: &str = "acme/infra";
const MAIN: &str = "refs/heads/main";

/// `issuer` trusted with two rules: `acme/infra` on `main` writes everything; any `acme/`
/// repository reads.
fn issuer_config(issuer: &TestIssuer) -> OidcIssuerConfig {
    let rule = |claims: &[(&str, &str)], role| ClaimRule {
        claims: claims
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect(),
        grants: vec![Grant {
            prefix: String::new(),
            role,
        }],
    };
    OidcIssuerConfig {
        rules: vec![
            rule(&[("repository", REPO), ("ref", MAIN)], Role::Write),
            rule(&[("repository", "acme/*")], Role::Read),
        ],
        ..OidcIssuerConfig::new(&issuer.url, AUDIENCE)
    }
}

fn trust(config: &mut GatewayConfig, issuer: OidcIssuerConfig) {
    config.oidc.push(issuer);
    // The bad-token table makes more failed logins than the default allows a minute.
    config.limits.failed_logins_per_minute = 1000;
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn with_bearer(
    gateway: &Running,
    method: &str,
    path: &str,
    token: &str,
    body: &[u8],
) -> gateway::Reply {
    send_with(
        gateway.addr,
        method,
        path,
        None,
        &[("Authorization", &bearer(token))],
        body,
    )
    .await
}

/// Every token in the table gets 401 on a write and on a read, and the gateway makes no S3
/// request at all for any of them (the fault proxy sees none; the versions are unchanged).
/// The audit line says why, names no principal, and never holds the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_tokens_get_401_and_nothing_is_read_or_written() {
    let issuer = TestIssuer::start().await;
    let dir = common::temp_dir("s3state-gw-oidc-audit");
    let audit_path = dir.join("audit.log");
    let (gateway, proxy) = gateway::start_configured(true, |config| {
        trust(config, issuer_config(&issuer));
        config.audit_log = Some(audit_path.clone());
    })
    .await;
    let proxy = proxy.unwrap();
    let name = "table/state";
    let lineage = "0a1d0c5e-1111-4222-8333-444444444444";
    let seeded = send(
        gateway.addr,
        "POST",
        &format!("/{name}"),
        Some(WRITER),
        &state_body(lineage, 1, 1),
    )
    .await;
    assert_eq!(seeded.status, 200, "{}", seeded.text());
    // A good token first, so the keys are cached: no row below is refused for want of them.
    let good = issuer.token(Alg::RS256, REPO, MAIN);
    assert_eq!(
        with_bearer(&gateway, "GET", &format!("/{name}"), &good, b"")
            .await
            .status,
        200
    );
    proxy.take_requests();

    let claims = issuer.claims(REPO, MAIN);
    let with = |changes: serde_json::Value| {
        let mut claims = claims.clone();
        for (name, value) in changes.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(name);
            } else {
                claims[name] = value.clone();
            }
        }
        claims
    };
    let rsa_header = json!({"alg": "RS256", "kid": Alg::RS256.kid()});
    let stranger = Keys::generate();
    let tampered = {
        // Signed for a feature branch, its claims then swapped for main's.
        let token = issuer.token(Alg::RS256, REPO, "refs/heads/feature");
        let parts: Vec<&str> = token.split('.').collect();
        let forged = raw_jws(&rsa_header, &claims, b"");
        let forged_claims = forged.split('.').nth(1).unwrap().to_owned();
        format!("{}.{}.{}", parts[0], forged_claims, parts[2])
    };
    let now = now();
    let table: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            issuer.sign(Alg::RS256, &with(json!({"exp": now - 3600}))),
            "token expired",
        ),
        (
            "no exp",
            issuer.sign(Alg::RS256, &with(json!({"exp": null}))),
            "token expired",
        ),
        (
            "not yet valid",
            issuer.sign(Alg::RS256, &with(json!({"nbf": now + 3600}))),
            "token not yet valid",
        ),
        (
            "wrong audience",
            issuer.sign(Alg::ES256, &with(json!({"aud": "someone-else"}))),
            "token for another audience",
        ),
        (
            "wrong issuer",
            issuer.sign(Alg::EdDSA, &with(json!({"iss": "http://127.0.0.1:9"}))),
            "token issuer not configured",
        ),
        (
            "alg none",
            raw_jws(&json!({"alg": "none", "kid": "rsa-1"}), &claims, b""),
            "token algorithm not allowed",
        ),
        (
            "HS256 signed with the public key",
            hs256(
                &json!({"alg": "HS256", "kid": "rsa-1"}),
                &claims,
                &issuer.keys.rsa_public_der(),
            ),
            "token algorithm not allowed",
        ),
        (
            "HS256 signed with the public JWK",
            hs256(
                &json!({"alg": "HS256", "kid": "rsa-1"}),
                &claims,
                issuer.keys.jwk(Alg::RS256, "rsa-1").to_string().as_bytes(),
            ),
            "token algorithm not allowed",
        ),
        (
            "unknown kid",
            sign_jws(
                &stranger,
                Alg::RS256,
                &json!({"alg": "RS256", "kid": "not-published"}),
                &claims,
            ),
            "token key unknown",
        ),
        (
            "published kid, another key",
            sign_jws(&stranger, Alg::RS256, &rsa_header, &claims),
            "token signature invalid",
        ),
        (
            "key embedded in the header (jwk)",
            sign_jws(
                &stranger,
                Alg::ES256,
                &json!({"alg": "ES256", "kid": "attacker",
                    "jwk": stranger.jwk(Alg::ES256, "attacker"),
                    "jku": format!("{}/keys", issuer.url)}),
                &claims,
            ),
            "token key unknown",
        ),
        (
            "ES256 naming the RSA key",
            sign_jws(
                &issuer.keys,
                Alg::ES256,
                &json!({"alg": "ES256", "kid": "rsa-1"}),
                &claims,
            ),
            "token key unknown",
        ),
        ("tampered payload", tampered, "token signature invalid"),
        (
            "no subject",
            issuer.sign(Alg::RS256, &with(json!({"sub": null}))),
            "token subject unusable",
        ),
        (
            "claims matching no rule",
            issuer.token(Alg::RS256, "other/repo", MAIN),
            "token matches no rule",
        ),
        (
            "oversized",
            issuer.sign(Alg::RS256, &with(json!({"pad": "x".repeat(20_000)}))),
            "token too large",
        ),
    ];
    let versions_before = common::version_count(&gateway.bucket, &key(name)).await;
    for (row, token, _) in &table {
        let write = with_bearer(
            &gateway,
            "POST",
            &format!("/{name}"),
            token,
            &state_body(lineage, 2, 2),
        )
        .await;
        assert_eq!(write.status, 401, "{row}: POST as bearer: {}", write.text());
        let read = send(
            gateway.addr,
            "GET",
            &format!("/{name}"),
            Some(("ci", token)),
            b"",
        )
        .await;
        assert_eq!(read.status, 401, "{row}: GET with the token as password");
        let lock = with_bearer(
            &gateway,
            "LOCK",
            &format!("/{name}"),
            token,
            &lock_body("thief", "ci"),
        )
        .await;
        assert_eq!(lock.status, 401, "{row}: LOCK");
        assert!(
            proxy.take_requests().is_empty(),
            "{row}: the gateway must not touch the store"
        );
    }
    assert_eq!(
        common::version_count(&gateway.bucket, &key(name)).await,
        versions_before,
        "nothing was written"
    );
    // A good token's write is audited under its issuer and subject.
    let written = with_bearer(
        &gateway,
        "POST",
        &format!("/{name}"),
        &good,
        &state_body(lineage, 2, 2),
    )
    .await;
    assert_eq!(written.status, 200, "{}", written.text());
    let audit = std::fs::read_to_string(&audit_path).unwrap();
    for (row, token, reason) in &table {
        assert!(
            audit.contains(&format!("\"refused: {reason}\"")),
            "{row}: the audit log says {reason:?}:\n{audit}"
        );
        // The signature part is the secret-looking part; no line holds any token.
        let signature = token.rsplit('.').next().unwrap();
        assert!(
            signature.len() < 8 || !audit.contains(signature),
            "{row}: the token is in the audit log"
        );
    }
    for line in audit.lines().filter(|line| line.contains("refused: token")) {
        let line: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(line["principal"].is_null(), "{line}");
    }
    assert!(!audit.contains(&good), "the good token is not logged");
    let good_line = audit
        .lines()
        .find(|line| line.contains("\"serial\":2") && line.contains("\"written\""));
    assert!(
        good_line
            .is_some_and(|line| line.contains(&format!("{}#repo:{REPO}:ref:{MAIN}", issuer.url))),
        "the good token's line names issuer and subject:\n{audit}"
    );
}

/// A token of each algorithm writes as `Authorization: Bearer` and reads as the basic-auth
/// password (any user name); a token matching only the read rule reads and may not write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn good_tokens_of_each_algorithm_work_as_bearer_and_as_password() {
    let issuer = TestIssuer::start().await;
    let (gateway, _) =
        gateway::start_configured(false, |config| trust(config, issuer_config(&issuer))).await;
    let lineage = "0a1d0c5e-5555-4666-8777-888888888888";
    for (serial, alg) in (1..).zip(Alg::ALL) {
        let token = issuer.token(alg, REPO, MAIN);
        let name = format!("algs/{}", alg.name());
        let write = with_bearer(
            &gateway,
            "POST",
            &format!("/{name}"),
            &token,
            &state_body(lineage, serial, serial),
        )
        .await;
        assert_eq!(write.status, 200, "{alg:?}: {}", write.text());
        let read = send(
            gateway.addr,
            "GET",
            &format!("/{name}"),
            Some(("anything", &token)),
            b"",
        )
        .await;
        assert_eq!(read.status, 200, "{alg:?} as password");
        assert_eq!(read.body, state_body(lineage, serial, serial));
    }
    // The gateway's history names each version's author: the token's issuer and subject.
    let history = with_bearer(
        &gateway,
        "GET",
        "/_history/algs/EdDSA",
        &issuer.token(Alg::RS256, REPO, MAIN),
        b"",
    )
    .await
    .json();
    assert_eq!(
        history[0]["author"],
        format!("{}#repo:{REPO}:ref:{MAIN}", issuer.url),
        "{history}"
    );
    assert_eq!(history[0]["operation"], "s3state gateway", "{history}");
    assert_eq!(history[0]["resources"], 0, "{history}");
    let reader = issuer.token(Alg::EdDSA, "acme/website", MAIN);
    let read = with_bearer(&gateway, "GET", "/algs/RS256", &reader, b"").await;
    assert_eq!(read.status, 200);
    let write = with_bearer(
        &gateway,
        "POST",
        "/algs/RS256",
        &reader,
        &state_body(lineage, 9, 9),
    )
    .await;
    assert_eq!(write.status, 403, "the read rule grants no write");
}

/// The issuer's `username`, when configured, must be the basic-auth user name a token comes
/// with; an issuer allowing only RS256 refuses an otherwise good ES256 token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_configured_user_name_and_algorithms_are_enforced() {
    let issuer = TestIssuer::start().await;
    let (gateway, _) = gateway::start_configured(false, |config| {
        let mut trusted = issuer_config(&issuer);
        trusted.username = Some("oidc".into());
        trusted.algorithms = vec![s3state::server::TokenAlgorithm::RS256];
        trust(config, trusted);
    })
    .await;
    let rsa = issuer.token(Alg::RS256, REPO, MAIN);
    let as_user = |user: &'static str, token: String| {
        let addr = gateway.addr;
        async move {
            send(addr, "GET", "/u", Some((user, &token)), b"")
                .await
                .status
        }
    };
    assert_eq!(as_user("oidc", rsa.clone()).await, 404, "no state yet");
    assert_eq!(as_user("someone", rsa).await, 401);
    let ec = issuer.token(Alg::ES256, REPO, MAIN);
    assert_eq!(as_user("oidc", ec).await, 401, "ES256 is not allowed");
}

/// Tokens naming keys the gateway does not hold refresh its key set at most once per
/// `jwks_refresh_interval_secs`, however many arrive; once the interval has passed, a key
/// the issuer has since published is fetched and accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_kids_refresh_the_keys_at_a_bounded_rate() {
    let issuer = TestIssuer::start().await;
    let interval = 2;
    let (gateway, _) = gateway::start_configured(false, |config| {
        let mut trusted = issuer_config(&issuer);
        trusted.jwks_refresh_interval_secs = interval;
        trust(config, trusted);
    })
    .await;
    let good = issuer.token(Alg::RS256, REPO, MAIN);
    // The interval runs from the first fetch, which this request makes: a check whether the
    // interval has passed must count from before it, or a slow machine reads a legitimate
    // refresh as a broken bound.
    let started = std::time::Instant::now();
    assert_eq!(
        with_bearer(&gateway, "GET", "/r", &good, b"").await.status,
        404
    );
    assert_eq!(issuer.jwks_fetches(), 1, "the first token fetched the keys");

    // The issuer rotates: a new key, published now.
    let rotated = Keys::generate();
    issuer.publish(rotated.jwk(Alg::RS256, "rsa-2"));
    let claims = issuer.claims(REPO, MAIN);
    let new_token = sign_jws(
        &rotated,
        Alg::RS256,
        &json!({"alg": "RS256", "kid": "rsa-2"}),
        &claims,
    );
    let mut refused = 0;
    // Fifty unknown kids within the interval: no fetch.
    for n in 0..50 {
        let token = sign_jws(
            &rotated,
            Alg::RS256,
            &json!({"alg": "RS256", "kid": format!("made-up-{n}")}),
            &claims,
        );
        if with_bearer(&gateway, "GET", "/r", &token, b"").await.status == 401 {
            refused += 1;
        }
    }
    assert_eq!(refused, 50);
    if started.elapsed() < std::time::Duration::from_secs(interval) {
        assert_eq!(
            issuer.jwks_fetches(),
            1,
            "no refresh within the interval, however many unknown kids"
        );
    }
    // After the interval: one fetch, and the rotated key is accepted.
    tokio::time::sleep(std::time::Duration::from_secs(interval + 1)).await;
    let accepted = with_bearer(&gateway, "GET", "/r", &new_token, b"").await;
    assert_eq!(
        accepted.status,
        404,
        "the rotated key works: {}",
        accepted.text()
    );
    let fetches = issuer.jwks_fetches();
    assert!(
        (2..=3).contains(&fetches),
        "one refresh (maybe two), not {fetches}"
    );
    // And a burst of unknown kids right after a refresh causes none.
    for n in 0..20 {
        let token = sign_jws(
            &rotated,
            Alg::RS256,
            &json!({"alg": "RS256", "kid": format!("again-{n}")}),
            &claims,
        );
        assert_eq!(
            with_bearer(&gateway, "GET", "/r", &token, b"").await.status,
            401
        );
    }
    if started.elapsed() < std::time::Duration::from_secs(2 * interval + 1) {
        assert_eq!(issuer.jwks_fetches(), fetches, "bounded again");
    }
}

/// An issuer that suddenly publishes an empty key set (a broken deployment, or someone
/// between it and the gateway) does not lock every token out: the keys held are kept. (Found
/// while attacking the change: the empty set used to replace them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_empty_key_set_does_not_replace_the_keys_held() {
    let issuer = TestIssuer::start().await;
    let (gateway, _) = gateway::start_configured(false, |config| {
        let mut trusted = issuer_config(&issuer);
        trusted.jwks_refresh_interval_secs = 1;
        trust(config, trusted);
    })
    .await;
    let good = issuer.token(Alg::ES256, REPO, MAIN);
    assert_eq!(
        with_bearer(&gateway, "GET", "/e", &good, b"").await.status,
        404
    );
    issuer.publish_set(json!({"keys": []}));
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    // An unknown kid, past the interval: the set is fetched again, and found empty.
    let stranger = Keys::generate();
    let unknown = sign_jws(
        &stranger,
        Alg::ES256,
        &json!({"alg": "ES256", "kid": "nope"}),
        &issuer.claims(REPO, MAIN),
    );
    assert_eq!(
        with_bearer(&gateway, "GET", "/e", &unknown, b"")
            .await
            .status,
        401
    );
    assert_eq!(issuer.jwks_fetches(), 2, "the set was fetched again");
    assert_eq!(
        with_bearer(&gateway, "GET", "/e", &good, b"").await.status,
        404,
        "the keys held still verify"
    );
}

/// The same subject under two issuers is two principals: a lock taken with issuer A's token
/// is not released, nor written under, with issuer B's token for the same subject; and a
/// token signed by A's key but claiming B as issuer is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subject_of_one_issuer_is_not_the_same_principal_under_another() {
    let first = TestIssuer::start().await;
    let second = TestIssuer::start().await;
    let (gateway, _) = gateway::start_configured(false, |config| {
        trust(config, issuer_config(&first));
        trust(config, issuer_config(&second));
    })
    .await;
    let token_a = first.token(Alg::RS256, REPO, MAIN);
    let token_b = second.token(Alg::RS256, REPO, MAIN);
    let lock = lock_body("lock-of-a", "ci@a");
    let taken = with_bearer(&gateway, "LOCK", "/shared", &token_a, &lock).await;
    assert_eq!(taken.status, 200, "{}", taken.text());
    let write_b = with_bearer(
        &gateway,
        "POST",
        "/shared?ID=lock-of-a",
        &token_b,
        &state_body("0a1d0c5e-9999-4aaa-8bbb-cccccccccccc", 1, 1),
    )
    .await;
    assert_eq!(
        write_b.status,
        403,
        "B does not own A's lock: {}",
        write_b.text()
    );
    let unlock_b = with_bearer(&gateway, "UNLOCK", "/shared", &token_b, &lock).await;
    assert_ne!(unlock_b.status, 200, "B cannot release A's lock");
    // A's key, B's name.
    let forged = first.sign(
        Alg::RS256,
        &json!({"iss": second.url, "aud": AUDIENCE, "sub": format!("repo:{REPO}:ref:{MAIN}"),
            "repository": REPO, "ref": MAIN, "exp": now() + 300}),
    );
    assert_eq!(
        with_bearer(&gateway, "GET", "/shared", &forged, b"")
            .await
            .status,
        401
    );
    let unlock_a = with_bearer(&gateway, "UNLOCK", "/shared", &token_a, &lock).await;
    assert_eq!(unlock_a.status, 200, "{}", unlock_a.text());
}

/// A real Terraform 1.15.5 applies through the gateway with `TF_HTTP_USERNAME` and
/// `TF_HTTP_PASSWORD` set to a token from the test issuer (nothing in the backend block).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn terraform_applies_with_an_oidc_token_as_its_password() {
    let issuer = TestIssuer::start().await;
    let (gateway, _) =
        gateway::start_configured(false, |config| trust(config, issuer_config(&issuer))).await;
    let url = gateway.url("oidc/app.tfstate");
    let backend = format!(
        r#"terraform {{
  backend "http" {{
    address        = "{url}"
    lock_address   = "{url}"
    unlock_address = "{url}"
    retry_wait_min = 0
    retry_wait_max = 1
  }}
}}
"#
    );
    let token = issuer.token(Alg::RS256, REPO, MAIN);
    let env = [
        ("TF_HTTP_USERNAME", "oidc"),
        ("TF_HTTP_PASSWORD", token.as_str()),
    ];
    let body = r#"resource "terraform_data" "example" {
  input = "applied with an OIDC token"
}
output "greeting" {
  value = "hello"
}
"#;
    let terraform = Workdir::new_with_env(&backend, body, &env).await;
    terraform.apply(&[]).await;
    let state = terraform.pull().await;
    assert_eq!(state["outputs"]["greeting"]["value"], "hello");
    assert_eq!(
        common::version_count(&gateway.bucket, &key("oidc/app.tfstate")).await,
        1
    );
    // Its versions name the token's principal, and Terraform's operation from its lock.
    let history = with_bearer(&gateway, "GET", "/_history/oidc/app.tfstate", &token, b"")
        .await
        .json();
    assert_eq!(
        history[0]["author"],
        format!("{}#repo:{REPO}:ref:{MAIN}", issuer.url),
        "{history}"
    );
    assert_eq!(history[0]["operation"], "OperationTypeApply", "{history}");
    assert_eq!(history[0]["resources"], 1, "{history}");
    // Without the token, Terraform is refused.
    let refused = Workdir::try_new_with_env(&backend, body, &[]).await;
    assert!(!refused.status.success(), "init without a token must fail");
}

/// Air-gapped: the keys from a file, the issuer never contacted (its URL does not resolve).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_from_a_file_need_no_network() {
    let keys = Keys::generate();
    let dir = common::temp_dir("s3state-gw-oidc-jwks");
    let jwks = dir.join("jwks.json");
    std::fs::write(
        &jwks,
        json!({"keys": [keys.jwk(Alg::EdDSA, "offline-1")]}).to_string(),
    )
    .unwrap();
    let issuer_url = "https://issuer.invalid";
    let (gateway, _) = gateway::start_configured(false, |config| {
        let mut trusted = OidcIssuerConfig {
            jwks_file: Some(jwks.clone()),
            rules: vec![ClaimRule {
                claims: [("project_path".to_owned(), "acme/*".to_owned())].into(),
                grants: vec![Grant {
                    prefix: "acme".into(),
                    role: Role::Write,
                }],
            }],
            ..OidcIssuerConfig::new(issuer_url, AUDIENCE)
        };
        trusted.leeway_secs = 0;
        trust(config, trusted);
    })
    .await;
    let token = sign_jws(
        &keys,
        Alg::EdDSA,
        &json!({"alg": "EdDSA", "kid": "offline-1"}),
        &json!({"iss": issuer_url, "aud": [AUDIENCE, "other"], "sub": "project_path:acme/net:ref_type:branch:ref:main",
            "project_path": "acme/net", "ref_protected": "true", "exp": now() + 60}),
    );
    let write = with_bearer(
        &gateway,
        "POST",
        "/acme/net",
        &token,
        &state_body("0a1d0c5e-dddd-4eee-8fff-000000000000", 1, 1),
    )
    .await;
    assert_eq!(write.status, 200, "{}", write.text());
    let elsewhere = with_bearer(&gateway, "GET", "/other/net", &token, b"").await;
    assert_eq!(elsewhere.status, 403, "the grant covers acme/ only");
}

/// Configurations that would trust too much are refused before anything listens: an HMAC or
/// `none` algorithm, an issuer over plain http on the network, a rule every token matches, a
/// leeway that keeps expired tokens alive, a missing audience.
#[test]
fn oidc_configurations_that_trust_too_much_are_refused() {
    use s3state::server::ConfigError;
    let parse = |text: &str| GatewayConfig::from_str_at(text, "gateway.toml".as_ref());
    let base = r#"
[s3]
bucket = "b"
[[oidc]]
issuer = "https://token.actions.githubusercontent.com"
audience = "s3state"
ALGS
[[oidc.rules]]
claims = { repository = "REPO" }
grants = [{ prefix = "", role = "write" }]
"#;
    let good = parse(&base.replace("ALGS", "").replace("REPO", "acme/infra")).unwrap();
    good.validate().unwrap();
    for alg in ["HS256", "none", "RS384"] {
        let err = parse(
            &base
                .replace("ALGS", &format!("algorithms = [\"{alg}\"]"))
                .replace("REPO", "acme/infra"),
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{alg}: {err}");
    }
    let refused = |config: GatewayConfig, field: &str| {
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains(field), "{field}: {err}");
    };
    refused(
        parse(&base.replace("ALGS", "").replace("REPO", "*")).unwrap(),
        "oidc[0].rules[0]",
    );
    let mut config = good.clone();
    config.oidc[0].issuer = "http://issuer.example".into();
    refused(config, "oidc[0].issuer");
    let mut config = good.clone();
    config.oidc[0].issuer = "https://issuer.example/#x".into();
    refused(config, "oidc[0].issuer");
    let mut config = good.clone();
    config.oidc[0].leeway_secs = 3600;
    refused(config, "oidc[0].leeway_secs");
    let mut config = good.clone();
    config.oidc[0].audience = String::new();
    refused(config, "oidc[0].audience");
    let mut config = good.clone();
    config.oidc[0].rules.clear();
    refused(config, "oidc[0].rules");
    let mut config = good.clone();
    config.oidc.push(config.oidc[0].clone());
    refused(config, "oidc[1].issuer");
    let mut config = good.clone();
    config.oidc[0].issuer = "http://127.0.0.1:8080".into();
    config.validate().unwrap();
}

/// A client whose lock info carries a huge `Operation` (with CR/LF and non-ASCII) still
/// writes under its lock: what is recorded is cut to fit S3's 2 KB of user metadata, marked
/// as cut, and safe in a header; the author is still the authenticated principal, whatever
/// `Who` the lock info says. (Found attacking issue 26; S3 refuses a PUT whose metadata
/// exceed 2 KB, and the emulators do not, so the stored metadata are measured.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_huge_operation_in_the_lock_info_neither_fails_writes_nor_spoofs_the_author() {
    let issuer = TestIssuer::start().await;
    let (gateway, _) =
        gateway::start_configured(false, |config| trust(config, issuer_config(&issuer))).await;
    let token = issuer.token(Alg::RS256, REPO, MAIN);
    let name = "huge/operation";
    let mut lock: serde_json::Value =
        serde_json::from_slice(&lock_body("huge-op", "admin@spoofed")).unwrap();
    lock["Operation"] = json!(format!("Apply\r\nX-Injected: 1 é {}", "o".repeat(20_000)));
    let taken = with_bearer(
        &gateway,
        "LOCK",
        &format!("/{name}"),
        &token,
        lock.to_string().as_bytes(),
    )
    .await;
    assert_eq!(taken.status, 200, "{}", taken.text());
    let write = with_bearer(
        &gateway,
        "POST",
        &format!("/{name}?ID=huge-op"),
        &token,
        &state_body("0a1d0c5e-aaaa-4bbb-8ccc-dddddddddddd", 1, 1),
    )
    .await;
    assert_eq!(write.status, 200, "{}", write.text());
    let head = common::client()
        .head_object()
        .bucket(&gateway.bucket)
        .key(key(name))
        .send()
        .await
        .unwrap();
    let metadata = head.metadata().cloned().unwrap_or_default();
    let size: usize = metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
    assert!(size <= 2048, "{size} bytes of user metadata: {metadata:?}");
    let history = with_bearer(&gateway, "GET", &format!("/_history/{name}"), &token, b"")
        .await
        .json();
    let operation = history[0]["operation"].as_str().unwrap();
    assert!(
        operation.starts_with("Apply\r\nX-Injected: 1 é ") && operation.ends_with('…'),
        "{operation:?}"
    );
    assert_eq!(
        history[0]["author"],
        format!("{}#repo:{REPO}:ref:{MAIN}", issuer.url),
        "the author is the principal, not the lock info's Who"
    );
}

/// Rules that every token of the issuer matches all the same are refused like `*`: a pattern
/// of wildcards only (`?*` matches any non-empty value), or a rule naming only `iss` and `aud`,
/// which every accepted token has as configured. And a basic-auth user cannot be named like
/// an OIDC principal (`<issuer>#<subject>`), whose locks it would own: a user name has no ':'
/// and an issuer is a URL. (Found attacking issue 26.)
#[test]
fn rules_every_token_matches_and_users_named_like_principals_are_refused() {
    let parse = |text: &str| GatewayConfig::from_str_at(text, "gateway.toml".as_ref()).unwrap();
    let config = |claims: &str, user: &str| {
        let users = if user.is_empty() {
            String::new()
        } else {
            format!(
                "[[users]]\nname = {user:?}\npassword_hash = {:?}\ngrants = [{{ prefix = \"\", role = \"read\" }}]\n",
                s3state::server::hash_password("pw")
            )
        };
        parse(&format!(
            r#"
[s3]
bucket = "b"
{users}
[[oidc]]
issuer = "https://token.actions.githubusercontent.com"
audience = "s3state"
[[oidc.rules]]
claims = {{ {claims} }}
grants = [{{ prefix = "", role = "write" }}]
"#
        ))
    };
    for claims in [
        r#"repository = "?*""#,
        r#"repository = "*?""#,
        r#"repository = "?*", ref = "*""#,
        r#"iss = "https://token.actions.githubusercontent.com""#,
        r#"aud = "s3state""#,
        r#"iss = "https://token.actions.githubusercontent.com", aud = "s3state", ref = "*""#,
    ] {
        let err = config(claims, "").validate().unwrap_err();
        assert!(
            err.to_string().contains("oidc[0].rules[0]"),
            "{claims}: {err}"
        );
    }
    for claims in [
        r#"repository = "acme/*""#,
        r#"repository_owner = "acme", iss = "https://token.actions.githubusercontent.com""#,
        r#"ref = "refs/heads/release-?""#,
    ] {
        config(claims, "").validate().unwrap();
    }
    let user = "https://token.actions.githubusercontent.com#repo:acme/infra:ref:refs/heads/main";
    let err = config(r#"repository = "acme/infra""#, user)
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("users[0].name"), "{err}");
    config(r#"repository = "acme/infra""#, "ci#1")
        .validate()
        .unwrap();
}

/// A token refreshed mid-apply (same issuer and subject; another `exp`, `jti` and algorithm)
/// is the same principal: it writes under, and releases, the lock the first token took. A
/// basic-auth user may do neither under a token's lock, nor a token under a user's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refreshed_token_owns_its_subjects_lock_and_users_and_tokens_own_none_of_each_others() {
    let issuer = TestIssuer::start().await;
    let (gateway, _) =
        gateway::start_configured(false, |config| trust(config, issuer_config(&issuer))).await;
    let lineage = "0a1d0c5e-7777-4888-8999-aaaaaaaaaaaa";
    let first = issuer.token(Alg::RS256, REPO, MAIN);
    let mut claims = issuer.claims(REPO, MAIN);
    claims["exp"] = json!(now() + 900);
    claims["jti"] = json!("refreshed");
    let refreshed = issuer.sign(Alg::ES256, &claims);
    assert_ne!(first, refreshed);
    let lock = lock_body("token-lock", "ci");
    let taken = with_bearer(&gateway, "LOCK", "/refresh", &first, &lock).await;
    assert_eq!(taken.status, 200, "{}", taken.text());
    let by_user = send(
        gateway.addr,
        "POST",
        "/refresh?ID=token-lock",
        Some(WRITER),
        &state_body(lineage, 1, 1),
    )
    .await;
    assert_eq!(by_user.status, 403, "{}", by_user.text());
    let write = with_bearer(
        &gateway,
        "POST",
        "/refresh?ID=token-lock",
        &refreshed,
        &state_body(lineage, 1, 1),
    )
    .await;
    assert_eq!(write.status, 200, "{}", write.text());
    let released = with_bearer(&gateway, "UNLOCK", "/refresh", &refreshed, &lock).await;
    assert_eq!(released.status, 200, "{}", released.text());

    let user_lock = lock_body("user-lock", "writer@host");
    let taken = send(gateway.addr, "LOCK", "/refresh", Some(WRITER), &user_lock).await;
    assert_eq!(taken.status, 200, "{}", taken.text());
    let by_token = with_bearer(
        &gateway,
        "POST",
        "/refresh?ID=user-lock",
        &refreshed,
        &state_body(lineage, 2, 2),
    )
    .await;
    assert_eq!(by_token.status, 403, "{}", by_token.text());
    let unlock = with_bearer(&gateway, "UNLOCK", "/refresh", &refreshed, &user_lock).await;
    assert_ne!(unlock.status, 200, "a token cannot release a user's lock");
}

/// Issuers that misbehave give no keys, and no request waits on them past the fetch timeout
/// (a safety net, not a timing assertion): a discovery document naming another issuer, a
/// `jwks_uri` on plain http off loopback, a key set behind a redirect (not followed), one that
/// never finishes answering, one larger than the gateway reads, and many tokens with unknown
/// kids at once (one fetch between them). The same key, published plainly, is accepted: the
/// refusals are the issuers'. (Attacking issue 26; these hold.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn misbehaving_issuers_give_no_keys_and_hold_no_request() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let keys = Keys::generate();
    let jwks = json!({"keys": [keys.jwk(Alg::RS256, "k")]});
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let good_fetches = Arc::new(AtomicUsize::new(0));
    let discovery = |case: &str, issuer: String, jwks_uri: String| {
        let document = json!({"issuer": issuer, "jwks_uri": jwks_uri});
        (
            format!("/{case}/.well-known/openid-configuration"),
            axum::routing::get(move || async move { axum::Json(document) }),
        )
    };
    let mut router = axum::Router::new();
    for (path, route) in [
        discovery(
            "other",
            format!("{base}/someone-else"),
            format!("{base}/good/keys"),
        ),
        discovery(
            "plain",
            format!("{base}/plain"),
            "http://issuer.invalid/keys".into(),
        ),
        discovery(
            "redirect",
            format!("{base}/redirect"),
            format!("{base}/redirect/keys"),
        ),
        discovery("slow", format!("{base}/slow"), format!("{base}/slow/keys")),
        discovery("huge", format!("{base}/huge"), format!("{base}/huge/keys")),
        discovery("good", format!("{base}/good"), format!("{base}/good/keys")),
    ] {
        router = router.route(&path, route);
    }
    let good_keys = jwks.clone();
    let counter = Arc::clone(&good_fetches);
    let router = router
        .route(
            "/good/keys",
            axum::routing::get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                let body = good_keys.clone();
                async move { axum::Json(body) }
            }),
        )
        .route(
            "/redirect/keys",
            axum::routing::get(|| async { axum::response::Redirect::temporary("/good/keys") }),
        )
        .route(
            "/slow/keys",
            axum::routing::get(|| async {
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                "{}"
            }),
        )
        .route(
            "/huge/keys",
            axum::routing::get({
                let jwks = jwks.clone();
                move || {
                    let mut body = jwks.clone();
                    body["padding"] = json!("x".repeat(1024 * 1024));
                    async move { axum::Json(body) }
                }
            }),
        );
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let cases = ["other", "plain", "redirect", "slow", "huge", "good"];
    let (gateway, _) = gateway::start_configured(false, |config| {
        for case in cases {
            let mut trusted = OidcIssuerConfig {
                rules: vec![ClaimRule {
                    claims: [("repository".to_owned(), REPO.to_owned())].into(),
                    grants: vec![Grant {
                        prefix: String::new(),
                        role: Role::Read,
                    }],
                }],
                ..OidcIssuerConfig::new(format!("{base}/{case}"), AUDIENCE)
            };
            trusted.fetch_timeout_secs = 1;
            trusted.jwks_refresh_interval_secs = 1;
            trust(config, trusted);
        }
    })
    .await;
    let token = |issuer: &str, kid: &str| {
        sign_jws(
            &keys,
            Alg::RS256,
            &json!({"alg": "RS256", "kid": kid}),
            &json!({"iss": issuer, "aud": AUDIENCE, "sub": "repo:acme/infra",
                "repository": REPO, "exp": now() + 300}),
        )
    };
    let safety_net = std::time::Duration::from_secs(30);
    for case in cases {
        let reply = tokio::time::timeout(
            safety_net,
            with_bearer(
                &gateway,
                "GET",
                "/issuers",
                &token(&format!("{base}/{case}"), "k"),
                b"",
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("{case}: the request waited on the issuer"));
        let expected = if case == "good" { 404 } else { 401 };
        assert_eq!(reply.status, expected, "{case}: {}", reply.text());
    }
    assert_eq!(
        good_fetches.load(Ordering::SeqCst),
        1,
        "the redirect was not followed"
    );
    // Many unknown kids at once against the good issuer, a refresh due: one fetch between
    // them (the rest wait for it, then find the refresh not due).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let good = format!("{base}/good");
    let burst = futures::future::join_all((0..40).map(|n| {
        let token = token(&good, &format!("unknown-{n}"));
        let gateway = &gateway;
        async move {
            with_bearer(gateway, "GET", "/issuers", &token, b"")
                .await
                .status
        }
    }));
    let statuses = tokio::time::timeout(safety_net, burst).await.unwrap();
    assert!(statuses.iter().all(|status| *status == 401), "{statuses:?}");
    let fetches = good_fetches.load(Ordering::SeqCst);
    assert!(
        (2..=3).contains(&fetches),
        "one refresh for the burst (two on a slow machine), not {}",
        fetches - 1
    );
    server.abort();
}
