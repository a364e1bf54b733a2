//! The gateway's web page, `/ui/` (issue 26): plain HTTP checks of its authentication,
//! grants, CSRF and security headers (`http`), and a real Chromium walking it (`browser`).

mod browser;
mod http;

use crate::common::gateway::{self, ADMIN, Running, WRITER, lock_body, send};

/// The state the UI tests look at.
pub const NAME: &str = "app/db.tfstate";
/// The lock the fixture leaves on it.
pub const LOCK_ID: &str = "6b1c2d3e-0000-4000-8000-00000000abcd";
/// Secrets in the fixture: no page may show them.
pub const SECRETS: [&str; 4] = [
    "hunter2-SECRET-v1",
    "hunter2-SECRET-v2",
    "out-SECRET-v1",
    "out-SECRET-v2",
];

/// A state of the fixture's lineage: `version` 1 or 2. Version 2 changes
/// `aws_db_instance.main`'s `instance_class` and its (sensitive) password, changes the
/// sensitive output, and adds a resource and an output whose values are markup.
pub fn fixture_state(version: u64) -> Vec<u8> {
    let class = if version == 1 {
        "db.t3.micro"
    } else {
        "db.t3.large"
    };
    let mut resources = vec![serde_json::json!({
        "mode": "managed", "type": "aws_db_instance", "name": "main",
        "provider": "provider[\"registry.terraform.io/hashicorp/aws\"]",
        "instances": [{
            "schema_version": 0,
            "attributes": {
                "id": "db-1", "instance_class": class,
                "password": format!("hunter2-SECRET-v{version}"),
                "tags": { "team": "data" }
            },
            "sensitive_attributes": [[{ "type": "get_attr", "value": "password" }]],
            "identity_schema_version": 0
        }]
    })];
    let mut outputs = serde_json::json!({
        "db_password": { "value": format!("out-SECRET-v{version}"), "type": "string", "sensitive": true },
        "endpoint": { "value": "db-1.example.internal:5432", "type": "string" }
    });
    if version == 2 {
        resources.push(serde_json::json!({
            "mode": "managed", "type": "terraform_data", "name": "xss",
            "provider": "provider[\"terraform.io/builtin/terraform\"]",
            "instances": [{
                "index_key": "<b>key</b>",
                "schema_version": 0,
                "attributes": { "id": "x", "input": { "value": "<script>alert('attr')</script>", "type": "string" } },
                "sensitive_attributes": [],
                "identity_schema_version": 0
            }]
        }));
        outputs["<script>alert('name')</script>"] = serde_json::json!({
            "value": "<img src=x onerror=alert(1)>", "type": "string"
        });
    }
    let state = serde_json::json!({
        "version": 4, "terraform_version": "1.15.5", "serial": version,
        "lineage": "3f1c6a52-8d6e-4a55-9c1e-0c7f2b1d9e44",
        "outputs": outputs, "resources": resources, "check_results": null
    });
    serde_json::to_vec_pretty(&state).unwrap()
}

/// Writes the fixture's two versions of [`NAME`] through the gateway's API, then takes its
/// lock as the writer with markup in the lock info (`Who`).
pub async fn write_fixture(gateway: &Running) {
    for version in [1, 2] {
        let reply = send(
            gateway.addr,
            "POST",
            &format!("/{NAME}"),
            Some(WRITER),
            &fixture_state(version),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let mut lock: serde_json::Value = serde_json::from_slice(&lock_body(LOCK_ID, "x")).unwrap();
    lock["Who"] = "<script>alert('who')</script>@ci".into();
    let reply = send(
        gateway.addr,
        "LOCK",
        &format!("/{NAME}"),
        Some(WRITER),
        &serde_json::to_vec(&lock).unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// Whether the fixture's lock object is in the bucket.
pub async fn lock_exists(gateway: &Running) -> bool {
    crate::common::client()
        .head_object()
        .bucket(&gateway.bucket)
        .key(format!("{}.tflock", gateway::key(NAME)))
        .send()
        .await
        .is_ok()
}

/// `GET path` as `who`; the body as text, after checking the status.
pub async fn page(gateway: &Running, path: &str, who: (&str, &str), status: u16) -> String {
    let reply = send(gateway.addr, "GET", path, Some(who), b"").await;
    assert_eq!(
        reply.status,
        status,
        "GET {path} as {}: {}",
        who.0,
        reply.text()
    );
    reply.text()
}

/// The admin's CSRF token, from the force-unlock confirmation page.
pub async fn csrf_token(gateway: &Running) -> String {
    let html = page(
        gateway,
        &format!("/ui/unlock/{NAME}?id={LOCK_ID}"),
        ADMIN,
        200,
    )
    .await;
    let at =
        html.find("name=\"csrf\" value=\"").expect("a CSRF field") + "name=\"csrf\" value=\"".len();
    html[at..at + 64].to_owned()
}
