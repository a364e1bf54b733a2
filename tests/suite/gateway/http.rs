//! `s3state serve`, the HTTP gateway, against LocalStack: the real Terraform 1.15.5 with
//! `backend "http"` (init, apply, plan, output, state pull/push, force-unlock, contention,
//! exclusion with the S3 backend, TLS with a test CA), and the protocol's answers to every
//! kind of bad request.

use crate::common;
use crate::common::gateway;

use gateway::{
    ADMIN, PAUSING_CONFIG, READER, Running, TEAM_A, WRITER, Workdir, http_backend, key, list_keys,
    lock_body, send, state_body,
};
use std::time::Duration;

const CONFIG: &str = r#"
variable "n" {
  type    = number
  default = 42
}
resource "terraform_data" "example" {
  input = { n = var.n, name = "hello" }
}
output "greeting" {
  value = "hello through the gateway"
}
output "n" {
  value = var.n
}
"#;

/// The versions stored under `key` (delete markers excluded).
async fn versions(gateway: &Running, name: &str) -> usize {
    common::version_count(&gateway.bucket, &key(name)).await
}

async fn lock_exists(gateway: &Running, name: &str) -> bool {
    common::client()
        .head_object()
        .bucket(&gateway.bucket)
        .key(format!("{}.tflock", key(name)))
        .send()
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn terraform_inits_applies_plans_and_reads_outputs_through_the_gateway() {
    let gateway = gateway::start().await;
    let backend = http_backend(&gateway, "app/demo.tfstate", WRITER, "");
    let terraform = Workdir::new(&backend, CONFIG).await;
    terraform.apply(&[]).await;

    // plan sees no change: the state round-trips through the gateway.
    let plan = terraform
        .run(&["plan", "-detailed-exitcode", "-input=false", "-no-color"])
        .await;
    assert_eq!(
        plan.status.code(),
        Some(0),
        "plan after apply must show no changes:\n{}",
        String::from_utf8_lossy(&plan.stdout)
    );
    let outputs: serde_json::Value =
        serde_json::from_str(&terraform.ok(&["output", "-json"]).await).unwrap();
    assert_eq!(outputs["greeting"]["value"], "hello through the gateway");
    assert_eq!(outputs["n"]["value"], 42);

    // The same bytes are in S3 under Terraform's layout, and nothing is left locked.
    let pulled = terraform.ok(&["state", "pull"]).await;
    let stored = common::get_raw(&gateway.bucket, &key("app/demo.tfstate")).await;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&stored).unwrap(),
        serde_json::from_str::<serde_json::Value>(&pulled).unwrap()
    );
    assert!(!lock_exists(&gateway, "app/demo.tfstate").await);

    // A second apply with a change: the serial moves, and history shows every version.
    terraform.apply(&["-var", "n=7"]).await;
    let after = terraform.pull().await;
    let history = send(
        gateway.addr,
        "GET",
        "/_history/app/demo.tfstate",
        Some(READER),
        b"",
    )
    .await;
    assert_eq!(history.status, 200, "{}", history.text());
    let listed = history.json();
    let listed = listed.as_array().unwrap();
    assert!(listed.len() >= 2, "{listed:?}");
    assert_eq!(listed[0]["serial"], after["serial"]);
    assert_eq!(listed[0]["lineage"], after["lineage"]);
    assert_eq!(listed[0]["is_latest"], true);

    // One past version, fetched by id, is the earlier state.
    let older = listed[1]["version_id"].as_str().unwrap();
    let version = send(
        gateway.addr,
        "GET",
        &format!("/_history/app/demo.tfstate?version={older}"),
        Some(READER),
        b"",
    )
    .await;
    assert_eq!(version.status, 200);
    assert_eq!(version.json()["outputs"]["n"]["value"], 42);
    assert!(version.header("content-md5").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn terraform_state_push_is_accepted_forward_and_refused_backward_by_the_gateway() {
    let gateway = gateway::start().await;
    let backend = http_backend(&gateway, "push", WRITER, "");
    let terraform = Workdir::new(&backend, CONFIG).await;
    terraform.apply(&[]).await;
    let mut state = terraform.pull().await;
    let serial = state["serial"].as_u64().unwrap();

    // A state with the next serial is pushed and pulled back.
    state["serial"] = (serial + 1).into();
    state["outputs"]["pushed"] = serde_json::json!({"value": "yes", "type": "string"});
    std::fs::write(
        terraform.dir.join("next.tfstate"),
        serde_json::to_vec_pretty(&state).unwrap(),
    )
    .unwrap();
    terraform.ok(&["state", "push", "next.tfstate"]).await;
    let pulled = terraform.pull().await;
    // (Terraform numbers a pushed state after the one it read, as with any backend.)
    let pushed_serial = pulled["serial"].as_u64().unwrap();
    assert!(pushed_serial > serial, "{pulled}");
    assert_eq!(pulled["outputs"]["pushed"]["value"], "yes");

    // Terraform's own -force skips its checks; the gateway still refuses another lineage
    // and an older serial, and writes nothing.
    let before = versions(&gateway, "push").await;
    let mut other = state.clone();
    other["lineage"] = "00000000-0000-0000-0000-000000000000".into();
    other["serial"] = (serial + 5).into();
    std::fs::write(terraform.dir.join("other.tfstate"), other.to_string()).unwrap();
    let refused = terraform
        .run(&["state", "push", "-force", "other.tfstate"])
        .await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("409"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let mut old = state.clone();
    old["serial"] = (serial - 1).into();
    std::fs::write(terraform.dir.join("old.tfstate"), old.to_string()).unwrap();
    let refused = terraform
        .run(&["state", "push", "-force", "old.tfstate"])
        .await;
    assert!(!refused.status.success());
    assert_eq!(versions(&gateway, "push").await, before, "nothing written");
    assert_eq!(terraform.pull().await["serial"], pushed_serial);
    assert!(!lock_exists(&gateway, "push").await, "no lock left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn force_unlock_of_a_dead_terraforms_lock_needs_the_admin_role() {
    let gateway = gateway::start().await;
    let writer = Workdir::new(&http_backend(&gateway, "stale", WRITER, ""), PAUSING_CONFIG).await;
    let admin = Workdir::new(&http_backend(&gateway, "stale", ADMIN, ""), PAUSING_CONFIG).await;

    // A Terraform dies holding the lock.
    let mut apply = gateway::start_paused_apply(&writer, &gateway.bucket, &key("stale")).await;
    apply.kill().await.unwrap();
    let lock = common::get_raw(&gateway.bucket, &format!("{}.tflock", key("stale"))).await;
    let id = serde_json::from_slice::<serde_json::Value>(&lock).unwrap()["ID"]
        .as_str()
        .unwrap()
        .to_owned();

    // The writer's force-unlock is refused (403), the lock stays.
    let refused = writer.run(&["force-unlock", "-force", &id]).await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(lock_exists(&gateway, "stale").await);

    // The admin's works, and the writer can apply again.
    admin.ok(&["force-unlock", "-force", &id]).await;
    assert!(!lock_exists(&gateway, "stale").await);
    std::fs::write(writer.dir.join("release"), "").unwrap();
    writer.apply(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_terraforms_contending_for_one_state_take_turns() {
    let gateway = gateway::start().await;
    let first = Workdir::new(
        &http_backend(&gateway, "shared", WRITER, ""),
        PAUSING_CONFIG,
    )
    .await;
    let second = Workdir::new(&http_backend(&gateway, "shared", ADMIN, ""), PAUSING_CONFIG).await;
    std::fs::write(second.dir.join("release"), "").unwrap();

    let apply = gateway::start_paused_apply(&first, &gateway.bucket, &key("shared")).await;
    let holder = common::get_raw(&gateway.bucket, &format!("{}.tflock", key("shared"))).await;
    let holder_id = serde_json::from_slice::<serde_json::Value>(&holder).unwrap()["ID"]
        .as_str()
        .unwrap()
        .to_owned();

    // The second is refused while the first holds the lock, and is told who holds it.
    let refused = second
        .run(&["apply", "-auto-approve", "-input=false", "-no-color"])
        .await;
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains(&holder_id), "{message}");

    // With -lock-timeout it waits for the first to finish, then applies on top of its state.
    let waiting = second
        .command(&[
            "apply",
            "-auto-approve",
            "-input=false",
            "-no-color",
            "-lock-timeout=60s",
        ])
        .output();
    let waiting = tokio::spawn(waiting);
    tokio::time::sleep(Duration::from_secs(2)).await;
    gateway::release(&first, apply).await;
    let output = waiting.await.unwrap().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The second applied on top of the first: the newest version is the second's (its
    // principal is the author), with a higher serial than every version the first wrote.
    // (Reading the first's serial after releasing it raced the second's apply.)
    let client = common::client();
    let listing = client
        .list_object_versions()
        .bucket(&gateway.bucket)
        .prefix(key("shared"))
        .send()
        .await
        .unwrap();
    let mut versions = Vec::new();
    for version in listing.versions() {
        if version.key() != Some(key("shared").as_str()) {
            continue;
        }
        let head = client
            .head_object()
            .bucket(&gateway.bucket)
            .key(key("shared"))
            .version_id(version.version_id().unwrap())
            .send()
            .await
            .unwrap();
        let metadata = head.metadata().cloned().unwrap_or_default();
        let serial: u64 = metadata["s3state-serial"].parse().unwrap();
        versions.push((metadata.get("s3state-gateway-user").cloned(), serial));
    }
    let (newest_author, newest_serial) = versions.first().cloned().expect("versions");
    assert_eq!(newest_author.as_deref(), Some(ADMIN.0), "{versions:?}");
    let firsts: Vec<u64> = versions
        .iter()
        .filter(|(author, _)| author.as_deref() == Some(WRITER.0))
        .map(|(_, serial)| *serial)
        .collect();
    assert!(!firsts.is_empty(), "{versions:?}");
    assert!(
        firsts.iter().all(|serial| *serial < newest_serial),
        "{versions:?}"
    );
    assert!(!lock_exists(&gateway, "shared").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_terraform_on_the_s3_backend_and_one_on_the_gateway_exclude_each_other() {
    let gateway = gateway::start().await;
    let name = "both/terraform.tfstate";
    let direct = Workdir::new(
        &common::terraform_backend_block(&gateway.bucket, &key(name)),
        PAUSING_CONFIG,
    )
    .await;
    let through = Workdir::new(&http_backend(&gateway, name, WRITER, ""), PAUSING_CONFIG).await;

    // The S3-backend Terraform holds the lock: the gateway Terraform is refused.
    std::fs::write(through.dir.join("release"), "").unwrap();
    let apply = gateway::start_paused_apply(&direct, &gateway.bucket, &key(name)).await;
    let refused = through
        .run(&["apply", "-auto-approve", "-input=false", "-no-color"])
        .await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("lock"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    gateway::release(&direct, apply).await;
    let direct_serial = direct.pull().await["serial"].as_u64().unwrap();

    // The gateway Terraform holds the lock: the S3-backend Terraform is refused.
    std::fs::remove_file(through.dir.join("release")).unwrap();
    std::fs::write(direct.dir.join("release"), "").unwrap();
    let apply = gateway::start_paused_apply(&through, &gateway.bucket, &key(name)).await;
    let refused = direct
        .run(&["apply", "-auto-approve", "-input=false", "-no-color"])
        .await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("lock"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    gateway::release(&through, apply).await;

    // Both see one state, one lineage, moving forward.
    let seen_direct = direct.pull().await;
    let seen_through = through.pull().await;
    assert_eq!(seen_direct, seen_through);
    assert!(seen_direct["serial"].as_u64().unwrap() > direct_serial);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn terraform_reaches_the_gateway_over_tls_with_a_test_ca() {
    let dir = common::temp_dir("s3state-gw-tls");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "s3state test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    std::fs::write(dir.join("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).unwrap();

    let bucket = common::bucket(true).await;
    let mut config = gateway::config(&bucket);
    config.tls = Some(s3state::server::TlsSettings {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    });
    let gateway = gateway::start_with(config).await;
    assert!(gateway.url("x").starts_with("https://"));

    let ca_pem = ca.pem();
    let extra = format!("    client_ca_certificate_pem = <<EOT\n{ca_pem}EOT\n");
    let terraform = Workdir::new(&http_backend(&gateway, "tls", WRITER, &extra), CONFIG).await;
    terraform.apply(&[]).await;
    assert_eq!(terraform.pull().await["outputs"]["n"]["value"], 42);

    // Without the CA, Terraform refuses the certificate.
    let untrusted = common::temp_dir("s3state-gw-tls-untrusted");
    std::fs::write(
        untrusted.join("main.tf"),
        format!("{}\n{CONFIG}", http_backend(&gateway, "tls", WRITER, "")),
    )
    .unwrap();
    let workdir = Workdir {
        dir: untrusted,
        env: Vec::new(),
    };
    let refused = workdir.run(&["init", "-input=false", "-no-color"]).await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("certificate"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_state_changed_behind_the_gateways_back_under_a_lock_is_refused_and_named() {
    let gateway = gateway::start().await;
    let lineage = "11111111-2222-3333-4444-555555555555";
    let first = state_body(lineage, 1, 1);
    assert_eq!(
        send(gateway.addr, "POST", "/cas", Some(WRITER), &first)
            .await
            .status,
        200
    );

    let id = "5b2a3f5e-0000-4000-8000-000000000001";
    let locked = send(
        gateway.addr,
        "LOCK",
        "/cas",
        Some(WRITER),
        &lock_body(id, "me@here"),
    )
    .await;
    assert_eq!(locked.status, 200, "{}", locked.text());
    // Writes under the lock chain onto each other.
    let second = state_body(lineage, 2, 2);
    let path = format!("/cas?ID={id}");
    assert_eq!(
        send(gateway.addr, "POST", &path, Some(WRITER), &second)
            .await
            .status,
        200
    );
    let third = state_body(lineage, 3, 3);
    assert_eq!(
        send(gateway.addr, "POST", &path, Some(WRITER), &third)
            .await
            .status,
        200
    );

    // Another tool writes straight to S3 (a plain PUT, as Terraform's S3 backend does).
    common::put_raw(&gateway.bucket, &key("cas"), &state_body(lineage, 9, 9)).await;
    let before = versions(&gateway, "cas").await;
    let refused = send(
        gateway.addr,
        "POST",
        &path,
        Some(WRITER),
        &state_body(lineage, 4, 4),
    )
    .await;
    assert_eq!(refused.status, 409, "{}", refused.text());
    let message = refused.text();
    assert!(message.contains("behind the gateway's back"), "{message}");
    assert!(message.contains("serial 9"), "{message}");
    assert!(message.contains("serial 1"), "{message}");
    assert_eq!(versions(&gateway, "cas").await, before, "nothing written");

    let unlocked = send(
        gateway.addr,
        "UNLOCK",
        "/cas",
        Some(WRITER),
        &lock_body(id, "me@here"),
    )
    .await;
    assert_eq!(unlocked.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeated_write_after_a_lost_answer_is_a_success_that_writes_nothing() {
    let gateway = gateway::start().await;
    let lineage = "aaaaaaaa-2222-3333-4444-555555555555";
    let id = "5b2a3f5e-0000-4000-8000-000000000002";
    assert_eq!(
        send(
            gateway.addr,
            "LOCK",
            "/retry",
            Some(WRITER),
            &lock_body(id, "me@here")
        )
        .await
        .status,
        200
    );
    // go-retryablehttp repeats a LOCK whose answer it did not get: same ID, success.
    assert_eq!(
        send(
            gateway.addr,
            "LOCK",
            "/retry",
            Some(WRITER),
            &lock_body(id, "me@here")
        )
        .await
        .status,
        200
    );
    let body = state_body(lineage, 1, 1);
    let path = format!("/retry?ID={id}");
    assert_eq!(
        send(gateway.addr, "POST", &path, Some(WRITER), &body)
            .await
            .status,
        200
    );
    let written = versions(&gateway, "retry").await;
    // The same write again, as after a 5xx: success, no new version.
    let again = send(gateway.addr, "POST", &path, Some(WRITER), &body).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(versions(&gateway, "retry").await, written);
    // UNLOCK twice: the repeat finds nothing to unlock, which is success too.
    for _ in 0..2 {
        let reply = send(
            gateway.addr,
            "UNLOCK",
            "/retry",
            Some(WRITER),
            &lock_body(id, "me@here"),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let got = send(gateway.addr, "GET", "/retry", Some(READER), b"").await;
    assert_eq!(got.body, body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_get_the_right_status_write_nothing_and_leak_nothing() {
    let gateway = gateway::start().await;
    let addr = gateway.addr;
    let lineage = "bbbbbbbb-2222-3333-4444-555555555555";
    let good = state_body(lineage, 5, 5);
    assert_eq!(
        send(addr, "POST", "/table", Some(WRITER), &good)
            .await
            .status,
        200
    );
    let id = "5b2a3f5e-0000-4000-8000-000000000003";
    assert_eq!(
        send(
            addr,
            "LOCK",
            "/table",
            Some(WRITER),
            &lock_body(id, "holder@host")
        )
        .await
        .status,
        200
    );
    let locked_path = format!("/table?ID={id}");
    let mut v5: serde_json::Value = serde_json::from_slice(&state_body(lineage, 6, 6)).unwrap();
    v5["version"] = 5.into();
    let v5 = serde_json::to_vec(&v5).unwrap();
    let oversize = state_body(lineage, 6, 6)
        .into_iter()
        .chain(std::iter::repeat_n(b' ', 2 * 1024 * 1024))
        .collect::<Vec<u8>>();
    let wrong_password = (WRITER.0, "not-the-password");
    let rows: Vec<Row> = vec![
        (
            "no credentials",
            "POST",
            locked_path.clone(),
            None,
            good.clone(),
            401,
        ),
        (
            "a wrong password",
            "POST",
            locked_path.clone(),
            Some(wrong_password),
            good.clone(),
            401,
        ),
        (
            "an unknown user",
            "GET",
            "/table".into(),
            Some(("nobody", "x")),
            vec![],
            401,
        ),
        (
            "a read-only credential writing",
            "POST",
            locked_path.clone(),
            Some(READER),
            state_body(lineage, 6, 6),
            403,
        ),
        (
            "a read-only credential locking",
            "LOCK",
            "/other".into(),
            Some(READER),
            lock_body("x", "r@h"),
            403,
        ),
        (
            "a credential outside its prefix",
            "POST",
            "/team-b/x".into(),
            Some(TEAM_A),
            state_body(lineage, 1, 1),
            403,
        ),
        (
            "a missing lock ID",
            "POST",
            "/table".into(),
            Some(WRITER),
            state_body(lineage, 6, 6),
            423,
        ),
        (
            "a wrong lock ID",
            "POST",
            "/table?ID=not-the-id".into(),
            Some(WRITER),
            state_body(lineage, 6, 6),
            409,
        ),
        (
            "a wrong lock ID on unlock",
            "UNLOCK",
            "/table".into(),
            Some(WRITER),
            lock_body("not-the-id", "x@y"),
            409,
        ),
        (
            "a force-unlock by a writer",
            "UNLOCK",
            "/table".into(),
            Some(WRITER),
            vec![],
            403,
        ),
        (
            "a second LOCK",
            "LOCK",
            "/table".into(),
            Some(ADMIN),
            lock_body("another-id", "x@y"),
            423,
        ),
        (
            "an oversize body",
            "POST",
            locked_path.clone(),
            Some(WRITER),
            oversize,
            413,
        ),
        (
            "invalid JSON",
            "POST",
            locked_path.clone(),
            Some(WRITER),
            b"{\"version\": 4, ".to_vec(),
            400,
        ),
        (
            "an empty body",
            "POST",
            locked_path.clone(),
            Some(WRITER),
            vec![],
            400,
        ),
        (
            "a v5 state",
            "POST",
            locked_path.clone(),
            Some(WRITER),
            v5,
            400,
        ),
        (
            "another lineage",
            "POST",
            locked_path.clone(),
            Some(WRITER),
            state_body("cccccccc-2222-3333-4444-555555555555", 9, 9),
            409,
        ),
        (
            "an older serial",
            "POST",
            locked_path.clone(),
            Some(WRITER),
            state_body(lineage, 4, 4),
            409,
        ),
        (
            "the same serial, other content",
            "POST",
            locked_path.clone(),
            Some(WRITER),
            state_body(lineage, 5, 99),
            409,
        ),
        (
            "invalid lock info",
            "LOCK",
            "/fresh".into(),
            Some(WRITER),
            b"not json".to_vec(),
            400,
        ),
        (
            "a name with %2F",
            "POST",
            "/gw%2Ftable".into(),
            Some(WRITER),
            state_body(lineage, 6, 6),
            400,
        ),
        (
            "a name with a NUL",
            "GET",
            "/ta%00ble".into(),
            Some(READER),
            vec![],
            400,
        ),
        (
            "an unknown method",
            "PATCH",
            "/table".into(),
            Some(WRITER),
            vec![],
            405,
        ),
        (
            "a bad version id",
            "GET",
            "/_history/table?version=../x".into(),
            Some(READER),
            vec![],
            400,
        ),
        (
            "an unknown version",
            "GET",
            "/_history/table?version=nope".into(),
            Some(READER),
            vec![],
            404,
        ),
        (
            "a missing state",
            "GET",
            "/absent".into(),
            Some(READER),
            vec![],
            404,
        ),
    ];
    let before_versions = versions(&gateway, "table").await;
    let before_lock = common::get_raw(&gateway.bucket, &format!("{}.tflock", key("table"))).await;
    let listed_before = list_keys(&gateway.bucket).await;
    for (what, method, path, auth, body, expected) in &rows {
        let reply = send(addr, method, path, *auth, body).await;
        assert_eq!(reply.status, *expected, "{what}: {}", reply.text());
        let text = reply.text();
        for secret in [WRITER.1, READER.1, ADMIN.1, "not-the-password", "$argon2"] {
            assert!(!text.contains(secret), "{what} leaked a secret: {text}");
        }
        if *expected == 401 {
            assert!(reply.header("www-authenticate").is_some(), "{what}");
            assert!(
                !text.contains("table"),
                "{what} told an anonymous client about the state: {text}"
            );
        }
        if *expected >= 400 && method != &"GET" {
            assert!(
                !text.contains("\"outputs\""),
                "{what} leaked state content: {text}"
            );
        }
    }
    // A NUL byte sent raw is refused by the HTTP parser itself.
    let raw = send(addr, "GET", "/ta\0ble", Some(READER), b"").await;
    assert_eq!(raw.status, 400);

    assert_eq!(
        versions(&gateway, "table").await,
        before_versions,
        "nothing was written"
    );
    let after_lock = common::get_raw(&gateway.bucket, &format!("{}.tflock", key("table"))).await;
    assert_eq!(before_lock, after_lock, "the lock is untouched");
    assert_eq!(
        list_keys(&gateway.bucket).await,
        listed_before,
        "no object was created"
    );
    assert_eq!(
        send(addr, "GET", "/table", Some(READER), b"").await.body,
        good,
        "the state is what was written first"
    );
}

/// One bad request: what it is, method, path, credentials, body, expected status.
type Row<'a> = (
    &'a str,
    &'a str,
    String,
    Option<(&'a str, &'a str)>,
    Vec<u8>,
    u16,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_loris_client_is_disconnected_and_others_are_still_served() {
    let bucket = common::bucket(true).await;
    let mut config = gateway::config(&bucket);
    config.limits.header_timeout_secs = 1;
    config.limits.request_timeout_secs = 2;
    let gateway = gateway::start_with(config).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // Headers dribbled out: the connection is closed.
    let mut slow = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    slow.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let mut buffer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(30), slow.read_to_end(&mut buffer)).await;
    assert!(closed.is_ok(), "the connection was not closed");

    // A body dribbled out: 408, and nothing is written.
    let mut slow = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let head = format!(
        "POST /slow HTTP/1.1\r\nHost: a\r\nAuthorization: {}\r\nContent-Length: 1000\r\n\r\n{{",
        gateway::basic(WRITER)
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let reply = gateway::read_reply(&mut slow).await;
    assert_eq!(reply.status, 408);
    assert_eq!(versions(&gateway, "slow").await, 0);

    // Meanwhile others are served.
    let healthy = send(gateway.addr, "GET", "/healthz", None, b"").await;
    assert_eq!(healthy.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_and_metrics_report_requests_conflicts_and_lock_waits() {
    let gateway = gateway::start().await;
    let addr = gateway.addr;
    assert_eq!(send(addr, "GET", "/healthz", None, b"").await.status, 200);
    assert_eq!(send(addr, "GET", "/metrics", None, b"").await.status, 401);
    let lineage = "dddddddd-2222-3333-4444-555555555555";
    send(addr, "POST", "/m", Some(WRITER), &state_body(lineage, 2, 2)).await;
    send(addr, "POST", "/m", Some(WRITER), &state_body(lineage, 1, 1)).await;
    send(addr, "LOCK", "/m", Some(WRITER), &lock_body("one", "a@b")).await;
    send(addr, "LOCK", "/m", Some(WRITER), &lock_body("two", "a@b")).await;
    let metrics = send(addr, "GET", "/metrics", Some(ADMIN), b"").await;
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    assert!(
        text.contains(r#"s3state_gateway_requests_total{method="POST",status="200"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"s3state_gateway_requests_total{method="POST",status="409"} 1"#),
        "{text}"
    );
    assert!(text.contains("s3state_gateway_conflicts_total 1"), "{text}");
    assert!(
        text.contains("s3state_gateway_lock_waits_total 1"),
        "{text}"
    );
    assert!(
        text.contains("s3state_gateway_request_duration_seconds_bucket{le=\"+Inf\"}"),
        "{text}"
    );
    assert!(!text.contains(lineage), "metrics carry no state content");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_removes_the_current_snapshot_under_the_lock_and_history_keeps_it() {
    let gateway = gateway::start().await;
    let addr = gateway.addr;
    let body = state_body("eeeeeeee-2222-3333-4444-555555555555", 1, 1);
    send(addr, "POST", "/ws/dev", Some(WRITER), &body).await;
    // Locked by someone else: refused.
    send(
        addr,
        "LOCK",
        "/ws/dev",
        Some(ADMIN),
        &lock_body("held", "a@b"),
    )
    .await;
    assert_eq!(
        send(addr, "DELETE", "/ws/dev", Some(WRITER), b"")
            .await
            .status,
        423
    );
    // The lock's ID does not make another principal its holder (issue 23, item 1).
    assert_eq!(
        send(addr, "DELETE", "/ws/dev?ID=held", Some(WRITER), b"")
            .await
            .status,
        403
    );
    assert_eq!(
        send(addr, "DELETE", "/ws/dev?ID=held", Some(ADMIN), b"")
            .await
            .status,
        200
    );
    send(
        addr,
        "UNLOCK",
        "/ws/dev",
        Some(ADMIN),
        &lock_body("held", "a@b"),
    )
    .await;
    assert_eq!(
        send(addr, "GET", "/ws/dev", Some(READER), b"").await.status,
        404
    );
    let history = send(addr, "GET", "/_history/ws/dev", Some(READER), b"")
        .await
        .json();
    assert_eq!(history[0]["is_delete_marker"], true);
    assert_eq!(history[1]["serial"], 1);
}

#[tokio::test]
async fn bad_configuration_is_refused_with_a_message_naming_the_setting() {
    use s3state::server::{ConfigError, GatewayConfig};
    let parse = |text: &str| GatewayConfig::from_str_at(text, "gateway.toml".as_ref());
    let err = parse("listen = \"127.0.0.1:1\"\nlisen = 3\n").unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    assert!(err.to_string().contains("lisen"), "{err}");

    let base = "[s3]\nbucket = \"b\"\n[[users]]\nname = \"u\"\npassword_hash = \"HASH\"\ngrants = [{ prefix = \"\", role = \"write\" }]\n";
    let hash = s3state::server::hash_password("pw");
    let good = parse(&base.replace("HASH", &hash)).unwrap();
    good.validate().unwrap();

    let mut open = good.clone();
    open.listen = "0.0.0.0:8750".parse().unwrap();
    let err = open.validate().unwrap_err();
    assert!(matches!(err, ConfigError::InsecureListen { .. }), "{err}");
    open.insecure_listen = true;
    open.validate().unwrap();

    let err = parse(&base.replace("HASH", "plaintext"))
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("users[0].password_hash"), "{err}");
    assert!(
        !err.to_string().contains("plaintext"),
        "the value is not echoed: {err}"
    );

    let err = parse("[s3]\nbucket = \"b\"\n")
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("users"), "{err}");

    let err = parse(
        &base
            .replace("HASH", &hash)
            .replace("role = \"write\"", "role = \"owner\""),
    )
    .unwrap_err();
    assert!(err.to_string().contains("owner"), "{err}");

    let mut tls = good.clone();
    tls.tls = Some(s3state::server::TlsSettings {
        cert: "/nonexistent/cert.pem".into(),
        key: "/nonexistent/key.pem".into(),
    });
    let err = tls.validate().unwrap_err();
    assert!(matches!(err, ConfigError::Tls { .. }), "{err}");

    let json = GatewayConfig::from_str_at(
        &format!(r#"{{"s3": {{"bucket": "b"}}, "users": [{{"name": "u", "password_hash": "{hash}", "grants": [{{"prefix": "team", "role": "admin"}}]}}]}}"#),
        "gateway.json".as_ref(),
    )
    .unwrap();
    json.validate().unwrap();
    assert!(!format!("{json:?}").contains(&hash), "Debug hides hashes");
}

/// Two gateways on one bucket: what a request needs is in S3, not in a replica's memory.
async fn two_replicas() -> (Running, Running) {
    let bucket = common::bucket(true).await;
    let a = gateway::start_with(gateway::config(&bucket)).await;
    let b = gateway::start_with(gateway::config(&bucket)).await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn terraform_locking_on_one_replica_and_writing_through_another_works() {
    let (a, b) = two_replicas().await;
    let (lock_url, state_url) = (a.url("replicas"), b.url("replicas"));
    let backend = format!(
        r#"terraform {{
  backend "http" {{
    address        = "{state_url}"
    lock_address   = "{lock_url}"
    unlock_address = "{lock_url}"
    username       = "{user}"
    password       = "{password}"
  }}
}}
"#,
        user = WRITER.0,
        password = WRITER.1
    );
    let terraform = Workdir::new(&backend, CONFIG).await;
    terraform.apply(&[]).await;
    terraform.apply(&["-var", "n=3"]).await;
    let pulled = terraform.pull().await;
    assert_eq!(pulled["outputs"]["n"]["value"], 3);
    assert!(!lock_exists(&a, "replicas").await);

    // The fence holds across replicas: a write behind the gateways' back between a lock taken
    // on A and a write sent to B is refused by B.
    let id = "5b2a3f5e-0000-4000-8000-000000000010";
    let locked = send(
        a.addr,
        "LOCK",
        "/replicas",
        Some(WRITER),
        &lock_body(id, "x@y"),
    )
    .await;
    assert_eq!(locked.status, 200);
    let mut changed = pulled.clone();
    changed["serial"] = (pulled["serial"].as_u64().unwrap() + 1).into();
    common::put_raw(&a.bucket, &key("replicas"), changed.to_string().as_bytes()).await;
    let mut ours = pulled.clone();
    ours["serial"] = (pulled["serial"].as_u64().unwrap() + 1).into();
    ours["outputs"]["n"]["value"] = 4.into();
    let refused = send(
        b.addr,
        "POST",
        &format!("/replicas?ID={id}"),
        Some(WRITER),
        ours.to_string().as_bytes(),
    )
    .await;
    assert_eq!(refused.status, 409, "{}", refused.text());
    assert!(refused.text().contains("behind the gateway's back"));
    let unlocked = send(
        b.addr,
        "UNLOCK",
        "/replicas",
        Some(WRITER),
        &lock_body(id, "x@y"),
    )
    .await;
    assert_eq!(unlocked.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_shutdown_finishes_a_write_in_flight() {
    use common::proxy::{Fault, Rule};
    let (mut gateway, proxy) = gateway::start_through_proxy().await;
    let bucket = gateway.bucket.clone();
    // The shutdown is triggered while S3 holds the write's answer back.
    let trigger = std::sync::Arc::new(std::sync::Mutex::new(Some(gateway.take_shutdown())));
    proxy.inject(
        Rule::new(Fault::DelayResponse(Duration::from_secs(2)))
            .method("PUT")
            .path(key("inflight"))
            // The first PUT is the gateway's own lock.
            .after(1)
            .then(std::sync::Arc::new(move || {
                if let Some(trigger) = trigger.lock().unwrap().take() {
                    let _ = trigger.send(());
                }
                Box::pin(async {})
            })),
    );
    let body = state_body("ffffffff-2222-3333-4444-555555555555", 1, 1);
    let reply = send(gateway.addr, "POST", "/inflight", Some(WRITER), &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let addr = gateway.addr;
    gateway.stop().await;
    assert_eq!(common::get_raw(&bucket, &key("inflight")).await, body);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the gateway stopped listening"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_whose_store_answer_was_lost_is_a_success_with_one_version() {
    use common::proxy::{Fault, Rule};
    let (gateway, proxy) = gateway::start_through_proxy().await;
    let bucket = gateway.bucket.clone();
    proxy.inject(
        Rule::new(Fault::DropResponse)
            .method("PUT")
            .path(key("lost"))
            // The first PUT is the gateway's own lock.
            .after(1),
    );
    let body = state_body("12121212-2222-3333-4444-555555555555", 1, 1);
    let reply = send(gateway.addr, "POST", "/lost", Some(WRITER), &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // Terraform's own retry of the same write: success, nothing new.
    let again = send(gateway.addr, "POST", "/lost", Some(WRITER), &body).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(common::version_count(&bucket, &key("lost")).await, 1);
    assert_eq!(common::get_raw(&bucket, &key("lost")).await, body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_without_a_lock_holds_the_gateways_own_lock_so_terraform_cannot_lock_midway() {
    use common::proxy::{Fault, Rule};
    let (gateway, proxy) = gateway::start_through_proxy().await;
    let bucket = gateway.bucket.clone();
    // Between the gateway's look at the lock and its write (when it reads the state), a
    // Terraform on the S3 backend tries to lock: had it got the lock, it would read the old
    // state and later overwrite the gateway's write with its blind PUT.
    let terraform_locked = std::sync::Arc::new(std::sync::Mutex::new(None));
    let hook = {
        let (bucket, terraform_locked) = (bucket.clone(), terraform_locked.clone());
        std::sync::Arc::new(move || {
            let (bucket, terraform_locked) = (bucket.clone(), terraform_locked.clone());
            Box::pin(async move {
                let terraform = common::manager(&bucket, &key("midway")).await;
                let outcome = s3state::Locker::lock(
                    &terraform,
                    &s3state::LockInfo::new("OperationTypeApply"),
                )
                .await;
                if let Ok(id) = &outcome {
                    s3state::Locker::unlock(&terraform, id).await.unwrap();
                }
                *terraform_locked.lock().unwrap() = Some(outcome.is_ok());
            }) as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        })
    };
    proxy.inject(
        Rule::new(Fault::DelayResponse(Duration::ZERO))
            .method("GET")
            .path(key("midway"))
            // The first GET reads the .tflock; the next reads the state before the write.
            .after(1)
            .then(hook),
    );
    let body = state_body("abababab-2222-3333-4444-555555555555", 1, 1);
    let reply = send(gateway.addr, "POST", "/midway", Some(WRITER), &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        *terraform_locked.lock().unwrap(),
        Some(false),
        "Terraform locked while the gateway was writing: {:?}",
        proxy.requests()
    );
    assert_eq!(common::get_raw(&bucket, &key("midway")).await, body);
    assert!(
        !common::object_exists(&bucket, &format!("{}.tflock", key("midway"))).await,
        "the gateway's own lock was left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_taken_outside_the_gateway_admits_no_gateway_write_and_only_an_admin_releases_it() {
    let gateway = gateway::start().await;
    let addr = gateway.addr;
    let before = state_body("abababab-2222-3333-4444-555555555555", 1, 1);
    assert_eq!(
        send(addr, "POST", "/outside", Some(WRITER), &before)
            .await
            .status,
        200
    );
    // A lock taken with the library (as `s3state lock` takes it): none of the gateway's
    // metadata, so no gateway client holds it, whatever ID it sends.
    let holder = common::manager(&gateway.bucket, &key("outside")).await;
    let id = s3state::Locker::lock(&holder, &s3state::LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();

    let relock = send(
        addr,
        "LOCK",
        "/outside",
        Some(WRITER),
        &lock_body(&id, "ci"),
    )
    .await;
    assert_eq!(
        relock.status,
        423,
        "not a repeat of a gateway LOCK: {}",
        relock.text()
    );
    let path = format!("/outside?ID={id}");
    let after = state_body("abababab-2222-3333-4444-555555555555", 2, 2);
    for (method, body) in [("POST", after.as_slice()), ("DELETE", b"".as_slice())] {
        let refused = send(addr, method, &path, Some(WRITER), body).await;
        assert_eq!(refused.status, 423, "{method}: {}", refused.text());
        assert!(refused.text().contains(&id), "{method} names the holder");
    }
    assert_eq!(
        common::get_raw(&gateway.bucket, &key("outside")).await,
        before
    );

    let by_writer = send(
        addr,
        "UNLOCK",
        "/outside",
        Some(WRITER),
        &lock_body(&id, "ci"),
    )
    .await;
    assert_eq!(by_writer.status, 403, "{}", by_writer.text());
    assert!(lock_exists(&gateway, "outside").await);
    let by_admin = send(
        addr,
        "UNLOCK",
        "/outside",
        Some(ADMIN),
        &lock_body(&id, "ci"),
    )
    .await;
    assert_eq!(by_admin.status, 200, "{}", by_admin.text());
    assert!(!lock_exists(&gateway, "outside").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_that_got_no_answer_keeps_the_gateways_own_lock_until_it_cannot_land() {
    use common::proxy::{Fault, Rule};
    let (gateway, proxy) = gateway::start_through_proxy().await;
    let bucket = gateway.bucket.clone();
    // Every attempt at the state's PUT is cut off: the gateway cannot know whether a request
    // is still on its way, so it keeps its own lock for the settle time after the failure.
    proxy.inject(
        Rule::new(Fault::ResetBeforeForward)
            .method("PUT")
            .path(key("unanswered"))
            // The first PUT is the gateway's own lock.
            .after(1)
            .times(100),
    );
    let body = state_body("cdcdcdcd-2222-3333-4444-555555555555", 1, 1);
    let addr = gateway.addr;
    let post =
        tokio::spawn(async move { send(addr, "POST", "/unanswered", Some(WRITER), &body).await });
    let lock_key = format!("{}.tflock", key("unanswered"));
    let failed_put = |requests: &[common::proxy::Recorded]| {
        requests
            .iter()
            .any(|r| r.method == "PUT" && r.path.ends_with(&key("unanswered")) && r.fault.is_some())
    };
    while !failed_put(&proxy.requests()) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Well after the failure (the old code released within a few requests).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !post.is_finished() && common::object_exists(&bucket, &lock_key).await,
        "the gateway released its lock while its write could still land"
    );
    let reply = post.await.unwrap();
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert!(!common::object_exists(&bucket, &lock_key).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unlock_waits_for_a_write_under_that_lock_still_on_its_way_to_s3() {
    use common::proxy::{Fault, Rule};
    let (gateway, proxy) = gateway::start_through_proxy().await;
    let bucket = gateway.bucket.clone();
    let id = "5b2a3f5e-0000-4000-8000-0000000000f1";
    let locked = send(
        gateway.addr,
        "LOCK",
        "/slow",
        Some(WRITER),
        &lock_body(id, "ci"),
    )
    .await;
    assert_eq!(locked.status, 200, "{}", locked.text());
    // The write's PUT reaches S3, and its answer comes back two seconds later.
    proxy.inject(
        Rule::new(Fault::DelayResponse(Duration::from_secs(2)))
            .method("PUT")
            .path(key("slow")),
    );
    let body = state_body("efefefef-2222-3333-4444-555555555555", 1, 1);
    let addr = gateway.addr;
    let post = tokio::spawn({
        let body = body.clone();
        async move { send(addr, "POST", &format!("/slow?ID={id}"), Some(WRITER), &body).await }
    });
    while !proxy
        .requests()
        .iter()
        .any(|r| r.method == "PUT" && r.path.ends_with(&key("slow")))
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The client gives up waiting and unlocks: the lock must outlive the write in flight.
    let unlock = tokio::spawn(async move {
        send(addr, "UNLOCK", "/slow", Some(WRITER), &lock_body(id, "ci")).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lock_key = format!("{}.tflock", key("slow"));
    assert!(
        common::object_exists(&bucket, &lock_key).await,
        "the lock was released while a write under it was on its way"
    );
    assert_eq!(post.await.unwrap().status, 200);
    assert_eq!(unlock.await.unwrap().status, 200);
    assert!(!common::object_exists(&bucket, &lock_key).await);
    assert_eq!(common::get_raw(&bucket, &key("slow")).await, body);
}
