//! The web UI in a real browser: Debian's Chromium, headless, driven over WebDriver by its
//! chromedriver (`tests/browser/install.sh` installs both; a missing browser fails these
//! tests, never skips them). Screenshots go to `target/ui-screenshots/`. From issue 26.

use super::{NAME, SECRETS, lock_exists, write_fixture};
use crate::common::gateway::{self, ADMIN, READER, Running, WRITER};
use crate::common::webdriver::{Driver, Session, screenshot_path};

/// The UI's address with credentials in it: Chromium sends them as basic auth, and keeps
/// them for the pages under `/ui/`.
fn ui_url(gateway: &Running, who: (&str, &str), path: &str) -> String {
    format!("http://{}:{}@{}{path}", who.0, who.1, gateway.addr)
}

async fn assert_no_secret(session: &Session, what: &str) {
    let source = session.source().await;
    for secret in SECRETS {
        assert!(!source.contains(secret), "{what} shows {secret}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_walks_from_the_list_to_a_diff_and_force_unlocks_and_a_reader_cannot() {
    let gateway = gateway::start().await;
    write_fixture(&gateway).await;
    let driver = Driver::start().await;

    // The admin: the state list, a folder, the state's history, the diff of its last change.
    let admin = driver.session().await;
    admin.navigate(&ui_url(&gateway, ADMIN, "/ui/")).await;
    assert_eq!(admin.title().await, "States · s3state");
    admin.screenshot(&screenshot_path("1-states")).await;
    admin.get("tr.folder a").await.click().await;
    admin.wait_for_url("/ui/?prefix=app/").await;
    assert!(
        admin.url().await.ends_with("/ui/?prefix=app/"),
        "{}",
        admin.url().await
    );
    let link = admin.get("tr.state a").await;
    assert_eq!(link.text().await, NAME);
    link.click().await;
    admin.wait_for_url(&format!("/ui/state/{NAME}")).await;
    assert!(admin.url().await.ends_with(&format!("/ui/state/{NAME}")));
    let lock = admin.get("#lock").await.text().await;
    assert!(
        lock.contains("Locked by <script>alert('who')</script>@ci"),
        "the holder, as text: {lock}"
    );
    assert!(lock.contains("OperationTypeApply"), "{lock}");
    let timeline = admin.get("#history").await.text().await;
    assert!(
        timeline.contains("+1 ~1 -0") && timeline.contains(WRITER.0),
        "the changes, and who wrote them through the gateway: {timeline}"
    );
    admin.screenshot(&screenshot_path("2-history")).await;
    assert_no_secret(&admin, "the history").await;

    admin.get("#history a.diff").await.click().await;
    admin.wait_for_url(&format!("/ui/diff/{NAME}?from=")).await;
    assert!(
        admin
            .url()
            .await
            .contains(&format!("/ui/diff/{NAME}?from="))
    );
    let resources = admin.get("#resources").await.text().await;
    assert!(resources.contains("aws_db_instance.main"), "{resources}");
    assert!(
        resources.contains("instance_class \"db.t3.micro\" \"db.t3.large\""),
        "the changed attribute, before and after: {resources}"
    );
    assert!(
        resources.contains("password (sensitive value) (sensitive value)"),
        "{resources}"
    );
    assert!(
        resources.contains("<script>alert('attr')</script>"),
        "markup shown as text: {resources}"
    );
    let outputs = admin.get("#output-changes").await.text().await;
    assert!(
        outputs.contains("db_password (sensitive value) (sensitive value)"),
        "{outputs}"
    );
    assert_no_secret(&admin, "the diff").await;
    admin.screenshot(&screenshot_path("3-diff")).await;
    // No script ran: an injected one would have opened an alert, which WebDriver reports.
    assert_eq!(admin.title().await, format!("Diff of {NAME} · s3state"));

    // Force-unlock: the confirmation needs its checkbox ticked (the browser will not submit
    // the form without it), then the lock is gone from the store.
    admin
        .navigate(&ui_url(&gateway, ADMIN, &format!("/ui/state/{NAME}")))
        .await;
    admin.get("#force-unlock").await.click().await;
    admin.wait_for_url("/ui/unlock/").await;
    admin.screenshot(&screenshot_path("4-force-unlock")).await;
    admin.get("#unlock").await.click().await;
    assert!(
        admin.url().await.contains("/ui/unlock/"),
        "not submitted unconfirmed"
    );
    assert!(lock_exists(&gateway).await);
    admin.get("#confirm").await.click().await;
    admin.get("#unlock").await.click().await;
    admin.wait_for_url(&format!("/ui/state/{NAME}")).await;
    assert!(
        admin.url().await.ends_with(&format!("/ui/state/{NAME}")),
        "{}",
        admin.url().await
    );
    assert!(admin.get("#lock").await.text().await.contains("Not locked"));
    assert!(
        !lock_exists(&gateway).await,
        "the lock is gone from the store"
    );
    admin.quit().await;

    // A reader sees the same state, locked again, and no force-unlock anywhere.
    let body = serde_json::to_vec(&serde_json::json!({
        "ID": "reader-sees-this", "Operation": "OperationTypePlan", "Info": "", "Who": "ci@runner",
        "Version": "1.15.5", "Created": "2026-11-25T10:00:00Z", "Path": ""
    }))
    .unwrap();
    let locked = gateway::send(
        gateway.addr,
        "LOCK",
        &format!("/{NAME}"),
        Some(gateway::WRITER),
        &body,
    )
    .await;
    assert_eq!(locked.status, 200, "{}", locked.text());
    let reader = driver.session().await;
    reader
        .navigate(&ui_url(&gateway, READER, &format!("/ui/state/{NAME}")))
        .await;
    assert!(
        reader
            .get("#lock")
            .await
            .text()
            .await
            .contains("Locked by ci@runner")
    );
    assert!(
        reader.find("#force-unlock").await.is_none(),
        "no button that would fail"
    );
    assert!(reader.find("button").await.is_none());
    reader.get("#outputs").await.click().await;
    reader.wait_for_url("/ui/outputs/").await;
    let outputs = reader.get("table#outputs").await.text().await;
    assert!(
        outputs.contains("db_password (sensitive value)")
            && outputs.contains("db-1.example.internal:5432"),
        "{outputs}"
    );
    assert_no_secret(&reader, "the outputs").await;
    reader
        .screenshot(&screenshot_path("5-reader-outputs"))
        .await;
    reader.quit().await;
}
