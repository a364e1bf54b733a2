//! The web UI over plain HTTP (no browser): credentials, grants, the force-unlock's admin
//! role, CSRF token and confirmation, the security headers, and escaping of what a state
//! holds. From issue 26's web page.

use super::{LOCK_ID, NAME, SECRETS, csrf_token, lock_exists, page, write_fixture};
use crate::common::gateway::{self, ADMIN, READER, WRITER, send, send_with};

const SECURITY_HEADERS: [(&str, &str); 5] = [
    (
        "content-security-policy",
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-frame-options", "DENY"),
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
];

fn assert_secure(reply: &gateway::Reply, what: &str) {
    for (name, value) in SECURITY_HEADERS {
        assert_eq!(reply.header(name), Some(value), "{name} on {what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_needs_credentials_and_every_answer_carries_the_security_headers() {
    let gateway = gateway::start().await;
    write_fixture(&gateway).await;
    let anonymous = send(gateway.addr, "GET", "/ui/", None, b"").await;
    assert_eq!(anonymous.status, 401);
    assert!(
        anonymous
            .header("www-authenticate")
            .unwrap()
            .starts_with("Basic")
    );
    assert_secure(&anonymous, "a 401");
    let wrong = send(gateway.addr, "GET", "/ui/", Some((READER.0, "wrong")), b"").await;
    assert_eq!(wrong.status, 401);

    for path in [
        "/ui/".to_owned(),
        format!("/ui/state/{NAME}"),
        format!("/ui/outputs/{NAME}"),
        "/ui/nowhere/x".to_owned(),
    ] {
        let reply = send(gateway.addr, "GET", &path, Some(READER), b"").await;
        assert!(
            matches!(reply.status, 200 | 404),
            "{path}: {}",
            reply.status
        );
        assert_secure(&reply, &path);
        if reply.status == 200 {
            assert_eq!(
                reply.header("content-type"),
                Some("text/html; charset=utf-8")
            );
        }
    }
    // The stylesheet the policy allows, from the gateway itself.
    let css = send(gateway.addr, "GET", "/ui/style.css", None, b"").await;
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").unwrap().starts_with("text/css"));
    assert_secure(&css, "the stylesheet");
    // No script anywhere, so the policy holds without 'unsafe-inline'.
    let list = page(&gateway, "/ui/", READER, 200).await;
    assert!(!list.to_lowercase().contains("<script"), "{list}");
    assert!(
        list.contains("href=\"/ui/?prefix=app/\""),
        "the app/ folder: {list}"
    );
}

/// An attacker who can write a state (a resource attribute, an instance key, an output name
/// and value, the lock's `Who`) gets text onto the pages, never markup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markup_in_a_state_or_its_lock_is_escaped_on_every_page() {
    let gateway = gateway::start().await;
    write_fixture(&gateway).await;
    let versions = send(
        gateway.addr,
        "GET",
        &format!("/_history/{NAME}"),
        Some(READER),
        b"",
    )
    .await
    .json();
    let ids: Vec<String> = versions["versions"]
        .as_array()
        .or_else(|| versions.as_array())
        .expect("versions")
        .iter()
        .map(|v| v["version_id"].as_str().unwrap().to_owned())
        .collect();
    let (new, old) = (&ids[0], &ids[1]);
    for path in [
        format!("/ui/state/{NAME}"),
        format!("/ui/diff/{NAME}?from={old}&to={new}"),
        format!("/ui/outputs/{NAME}"),
        format!("/ui/outputs/{NAME}?version={old}"),
        format!("/ui/unlock/{NAME}?id={LOCK_ID}"),
    ] {
        let html = page(&gateway, &path, ADMIN, 200).await;
        let lower = html.to_lowercase();
        assert!(
            !lower.contains("<script") && !lower.contains("<img") && !lower.contains("<b>key"),
            "{path}: {html}"
        );
        if !path.contains(&format!("version={old}")) {
            assert!(
                html.contains("&lt;script&gt;"),
                "{path} shows the markup as text: {html}"
            );
        }
        for secret in SECRETS {
            assert!(!html.contains(secret), "{path} shows {secret}");
        }
    }
    // The diff names the changed attribute, and masks the password as Terraform does.
    let diff = page(
        &gateway,
        &format!("/ui/diff/{NAME}?from={old}&to={new}"),
        READER,
        200,
    )
    .await;
    assert!(
        diff.contains("instance_class") && diff.contains("db.t3.large"),
        "{diff}"
    );
    assert!(
        diff.contains("password") && diff.contains("(sensitive value)"),
        "{diff}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_unlock_needs_an_admin_a_csrf_token_and_a_confirmation() {
    let audit = std::env::temp_dir().join(format!("s3state-ui-audit-{}.log", uuid::Uuid::new_v4()));
    let audit_path = audit.clone();
    let (gateway, _) = gateway::start_configured(false, move |config| {
        config.audit_log = Some(audit_path);
    })
    .await;
    write_fixture(&gateway).await;
    let token = csrf_token(&gateway).await;
    let form = |csrf: &str, confirm: bool| {
        format!(
            "id={LOCK_ID}&csrf={csrf}{}",
            if confirm { "&confirm=yes" } else { "" }
        )
    };
    let post = |who: (&'static str, &'static str), body: String| {
        let addr = gateway.addr;
        async move {
            send_with(
                addr,
                "POST",
                &format!("/ui/unlock/{NAME}"),
                Some(who),
                &[("Content-Type", "application/x-www-form-urlencoded")],
                body.as_bytes(),
            )
            .await
        }
    };

    // Readers and writers see the lock but no way to force it, and are refused if they try.
    for who in [READER, WRITER] {
        let state = page(&gateway, &format!("/ui/state/{NAME}"), who, 200).await;
        assert!(state.contains("Locked"), "{state}");
        assert!(
            !state.contains("force-unlock") && !state.contains("/ui/unlock/"),
            "{}: {state}",
            who.0
        );
        page(
            &gateway,
            &format!("/ui/unlock/{NAME}?id={LOCK_ID}"),
            who,
            403,
        )
        .await;
        assert_eq!(post(who, form(&token, true)).await.status, 403, "{}", who.0);
    }
    let admin_page = page(&gateway, &format!("/ui/state/{NAME}"), ADMIN, 200).await;
    assert!(admin_page.contains("id=\"force-unlock\""), "{admin_page}");
    // An admin's POST without the token, with a wrong one, or with another lock's token.
    assert_eq!(
        post(ADMIN, format!("id={LOCK_ID}&confirm=yes"))
            .await
            .status,
        403
    );
    // The token with its last digit changed (to a digit it is not: one token in sixteen
    // ends in 0, and then "the token with a 0 at the end" was the token itself).
    let last = if token.ends_with('0') { '1' } else { '0' };
    let wrong = format!("{}{last}", &token[..63]);
    assert_eq!(post(ADMIN, form(&wrong, true)).await.status, 403);
    assert_eq!(post(ADMIN, form(&"0".repeat(64), true)).await.status, 403);
    // Without the confirmation.
    assert_eq!(post(ADMIN, form(&token, false)).await.status, 400);
    assert!(
        lock_exists(&gateway).await,
        "nothing was unlocked by a refused request"
    );

    let done = post(ADMIN, form(&token, true)).await;
    assert_eq!(done.status, 303, "{}", done.text());
    assert_eq!(
        done.header("location"),
        Some(format!("/ui/state/{NAME}").as_str())
    );
    assert!(
        !lock_exists(&gateway).await,
        "the lock is gone from the store"
    );
    let lines = std::fs::read_to_string(&audit).unwrap();
    let _ = std::fs::remove_file(&audit);
    assert!(
        lines
            .lines()
            .any(|line| line.contains("\"force-unlocked (web UI)\"")
                && line.contains("\"principal\":\"admin\"")
                && line.contains(LOCK_ID)),
        "{lines}"
    );
    assert!(
        lines.contains("refused: force-unlock without a valid CSRF token"),
        "{lines}"
    );
    assert!(
        lines.contains("\"principal\":\"reader\"")
            && lines.contains("refused: no admin role (web UI)"),
        "{lines}"
    );
}

/// 10,000 states do not fit a page: the list pages, a folder at a time, and a search finds
/// one state among them (here with 60, over the 50 a page holds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_list_pages_by_folder_and_searches() {
    let gateway = gateway::start().await;
    for n in 0..60 {
        let name = format!("many/s{n:03}.tfstate");
        let body = gateway::state_body(&format!("lineage-{n}"), 1, n);
        let reply = send(
            gateway.addr,
            "POST",
            &format!("/{name}"),
            Some(WRITER),
            &body,
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let first = page(&gateway, "/ui/?prefix=many/", READER, 200).await;
    assert_eq!(first.matches("class=\"state\"").count(), 50, "{first}");
    let at = first.find("id=\"next\" href=\"").expect("a next page") + "id=\"next\" href=\"".len();
    let next = first[at..].split('"').next().unwrap().replace("&amp;", "&");
    let second = page(&gateway, &next, READER, 200).await;
    assert_eq!(second.matches("class=\"state\"").count(), 10, "{second}");
    assert!(second.contains("many/s059.tfstate") && !second.contains("many/s049.tfstate"));
    assert!(!second.contains("id=\"next\""));

    let found = page(&gateway, "/ui/?prefix=&q=S042", READER, 200).await;
    assert_eq!(found.matches("class=\"state\"").count(), 1, "{found}");
    assert!(found.contains("many/s042.tfstate"));
    // Each row: serial, and the lock status from the listing.
    assert!(
        found.contains("<td class=\"num\">1</td>") && found.contains("free"),
        "{found}"
    );
}
