//! s3state in five steps, against LocalStack (or any S3 you point it at).
//!
//! ```sh
//! ./localstack/quickstart.sh        # starts LocalStack if needed, then runs this
//! ```
//!
//! Settings come from the environment as in any s3state tool (`S3STATE_*`, `AWS_*`); when no
//! endpoint is configured this example assumes LocalStack on 127.0.0.1:4566.

use s3state::{
    Error, OutputReader, OutputValue, PersistentMeta, Persister, Refresher, S3Builder, State,
    Transient,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bucket = std::env::var("S3STATE_BUCKET").unwrap_or_else(|_| "s3state-quickstart".into());
    // A fresh key per run, so the output is the same every time.
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let key = format!("quickstart/{run}/terraform.tfstate");
    let builder = localstack_defaults(S3Builder::from_env())
        .with_bucket(&bucket)
        .with_key(&key);

    // 1. A versioned bucket: s3state keeps every snapshot through bucket versioning.
    create_versioned_bucket(&builder, &bucket).await?;
    println!("1. bucket s3://{bucket} is versioned; state key is {key}");

    // 2. Persist a brand-new state: serial 1 and a fresh lineage.
    let manager = builder.clone().build().await?;
    let mut state = State::new(semver::Version::new(1, 15, 5));
    state
        .outputs
        .insert("region".into(), OutputValue::new("eu-west-1"));
    state.outputs.insert(
        "db_password".into(),
        OutputValue::new("hunter2").sensitive(),
    );
    manager.write_state(state);
    manager.persist_state().await?;
    let meta = manager.state_snapshot_meta().expect("just written");
    println!(
        "2. persisted serial {} of lineage {}",
        meta.serial, meta.lineage
    );

    // 3. update(): refresh, change, persist, retried if another writer wins.
    let deploys = manager
        .update(|state| {
            let deploys = state
                .outputs
                .get("deploys")
                .and_then(|o| o.to_value().as_u64())
                .unwrap_or(0)
                + 1;
            state
                .outputs
                .insert("deploys".into(), OutputValue::new(&deploys));
            deploys
        })
        .await?;
    println!(
        "3. update() recorded deploy #{deploys}; serial is now {}",
        manager.state_snapshot_meta().unwrap().serial
    );

    // 4. Two writers race from the same snapshot: one wins, the other gets Conflict.
    let alice = builder.clone().build().await?;
    let bob = builder.clone().build().await?;
    alice.refresh_state().await?;
    bob.refresh_state().await?;
    for (writer, name) in [(&alice, "alice"), (&bob, "bob")] {
        let mut state = writer.state().expect("refreshed");
        state
            .outputs
            .insert("last_writer".into(), OutputValue::new(name));
        writer.write_state(state);
    }
    alice.persist_state().await?;
    match bob.persist_state().await {
        Err(err @ Error::Conflict { .. }) => println!("4. alice won the race; bob got: {err}"),
        other => return Err(format!("expected bob to get a Conflict, got {other:?}").into()),
    }
    // Bob does what a tool should: refresh and re-apply, here through update().
    bob.update(|state| {
        state
            .outputs
            .insert("last_writer".into(), OutputValue::new("bob"));
    })
    .await?;
    println!(
        "   bob refreshed and retried: serial {}",
        bob.state_snapshot_meta().unwrap().serial
    );

    // 5. Read the outputs as any consumer would (sensitive values masked).
    println!("5. root outputs:");
    for (name, output) in manager.root_output_values().await? {
        let shown = if output.sensitive {
            "(sensitive)".to_owned()
        } else {
            output.value.to_string()
        };
        println!("   {name} = {shown}");
    }
    Ok(())
}

/// LocalStack's settings, for whatever the environment does not set.
fn localstack_defaults(builder: S3Builder) -> S3Builder {
    let unset = |name: &str| std::env::var_os(name).is_none();
    if unset("S3STATE_ENDPOINT_URL") && unset("AWS_ENDPOINT_URL") {
        let builder = builder
            .with_endpoint_url("http://127.0.0.1:4566")
            .with_path_style(true);
        if unset("S3STATE_REGION") && unset("AWS_REGION") && unset("AWS_DEFAULT_REGION") {
            return builder.with_region("us-east-1");
        }
        return builder;
    }
    builder
}

async fn create_versioned_bucket(
    builder: &S3Builder,
    bucket: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
    // The store's own client, without the versioning check that would refuse the new bucket.
    let store = builder
        .clone()
        .with_versioning_required(false)
        .build_store()
        .await?;
    let client = store.client();
    if client.head_bucket().bucket(bucket).send().await.is_err() {
        client.create_bucket().bucket(bucket).send().await?;
    }
    client
        .put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await?;
    Ok(())
}
