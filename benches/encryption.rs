//! OpenTofu state encryption, side by side in one run on one LocalStack (issue 24):
//! 1. refresh of an encrypted state against a plaintext refresh of the same state (a fresh
//!    manager each time: one unconditional GET, then decrypt and parse), at each size;
//! 2. the layer alone, in memory: encrypt and decrypt of the same bytes;
//! 3. one pbkdf2 derivation with OpenTofu's defaults (600,000 iterations of sha512, 32 bytes),
//!    which a process pays once per (passphrase, salt): per version read, and per write.
//!
//! `cargo bench --bench encryption` (optimised build). `S3STATE_BENCH_SIZES=1MB,50MB` picks
//! the sizes (default 1MB,10MB,50MB); `S3STATE_BENCH_QUICK=1` runs fewer repetitions.

// The integration suite's harness, of which a bench uses a part.
#[path = "../tests/suite/common/mod.rs"]
#[allow(dead_code)]
mod common;

use bytes::Bytes;
use s3state::encryption::{EncryptionConfig, Secret, StateEncryption, pbkdf2_key};
use s3state::{OutputValue, Persister, RawJson, Refresher, State, Transient};
use std::time::{Duration, Instant};

const PASSPHRASE: &str = "benchmark-passphrase-0123456789";

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

/// A state of about `target` bytes: `terraform_data` resources, as Terraform writes them.
fn state_of(target: usize) -> State {
    let resource = |i: usize| {
        let value = serde_json::json!({"n": i, "name": format!("resource-{i}"), "tags": {"team": "platform", "env": "bench", "index": i.to_string()}});
        serde_json::json!({
            "mode": "managed", "type": "terraform_data", "name": format!("r{i}"),
            "provider": "provider[\"terraform.io/builtin/terraform\"]",
            "instances": [{"schema_version": 0, "attributes": {
                "id": format!("{i:08x}-1234-b672-5a80-f1755fba0dab"),
                "input": {"value": value, "type": "dynamic"},
                "output": {"value": value, "type": "dynamic"}},
                "sensitive_attributes": []}]
        })
    };
    let per_resource = serde_json::to_vec(&resource(0)).unwrap().len() + 100;
    let mut state = State::new(semver::Version::new(1, 15, 5));
    state.lineage = "6b0f3a52-4b1e-4f6e-9d5c-2f1b8f0c7a11".into();
    state.serial = 1;
    state.outputs.insert("count".into(), OutputValue::new(&0));
    let count = (target / per_resource).max(1);
    state.resources = RawJson::from_value(&(0..count).map(resource).collect::<Vec<_>>());
    state
}

fn encryption() -> StateEncryption {
    let config = format!(
        r#"{{"key_provider":{{"pbkdf2":{{"main":{{"passphrase":"{PASSPHRASE}"}}}}}},
            "method":{{"aes_gcm":{{"main":{{"keys":"key_provider.pbkdf2.main"}}}}}},
            "state":{{"method":"method.aes_gcm.main"}}}}"#
    );
    StateEncryption::from_config(&EncryptionConfig::parse(&config).unwrap()).unwrap()
}

fn parse_size(text: &str) -> usize {
    let text = text.trim();
    let (number, unit) =
        text.split_at(text.find(|c: char| c.is_alphabetic()).unwrap_or(text.len()));
    let n: usize = number.parse().expect("a size such as 10MB");
    n * match unit {
        "KB" => 1_000,
        "MB" => 1_000_000,
        _ => 1,
    }
}

#[tokio::main]
async fn main() {
    let sizes: Vec<String> = std::env::var("S3STATE_BENCH_SIZES")
        .unwrap_or_else(|_| "1MB,10MB,50MB".into())
        .split(',')
        .map(str::to_owned)
        .collect();
    let reps = if std::env::var_os("S3STATE_BENCH_QUICK").is_some() {
        3
    } else {
        7
    };
    let bucket = common::bucket(true).await;

    println!(
        "### Refresh of an encrypted state against a plaintext refresh (one run, LocalStack)\n"
    );
    println!(
        "| state | stored (plain / envelope) | plaintext refresh | encrypted refresh | ratio | decrypt alone (in memory) | encrypt alone |"
    );
    println!("|---|---|---|---|---|---|---|");
    for size in &sizes {
        let state = state_of(parse_size(size));
        let plain_key = format!("bench/{size}/plain.tfstate");
        let sealed_key = format!("bench/{size}/sealed.tfstate");
        let plain = common::builder(&bucket, &plain_key).build().await.unwrap();
        plain.write_state(state.clone());
        plain.persist_state().await.unwrap();
        let sealed = common::builder(&bucket, &sealed_key)
            .with_encryption(encryption())
            .build()
            .await
            .unwrap();
        sealed.write_state(state.clone());
        sealed.persist_state().await.unwrap();
        let stored_plain = common::get_raw(&bucket, &plain_key).await;
        let stored_sealed = common::get_raw(&bucket, &sealed_key).await;

        let (mut plain_times, mut sealed_times) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            // Alternated, each on a fresh manager: an unconditional GET, then the codec (and
            // the decryption; the derived key is in the process's cache after the first).
            let manager = common::builder(&bucket, &plain_key).build().await.unwrap();
            let started = Instant::now();
            manager.refresh_state().await.unwrap();
            plain_times.push(started.elapsed());
            let manager = common::builder(&bucket, &sealed_key)
                .with_encryption(encryption())
                .build()
                .await
                .unwrap();
            let started = Instant::now();
            manager.refresh_state().await.unwrap();
            sealed_times.push(started.elapsed());
            assert!(manager.state().unwrap().same_content(&state));
        }
        let layer = encryption();
        let (mut decrypts, mut encrypts) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            let started = Instant::now();
            let (opened, _) = layer
                .decrypt(Bytes::from(stored_sealed.clone()))
                .await
                .unwrap();
            decrypts.push(started.elapsed());
            assert_eq!(opened.len(), stored_plain.len());
            let started = Instant::now();
            layer.encrypt(opened).await.unwrap();
            encrypts.push(started.elapsed());
        }
        let (p, s) = (median(plain_times), median(sealed_times));
        println!(
            "| {size} | {:.1} / {:.1} MB | {} | {} | {:.2}× | {} | {} |",
            stored_plain.len() as f64 / 1e6,
            stored_sealed.len() as f64 / 1e6,
            ms(p),
            ms(s),
            s.as_secs_f64() / p.as_secs_f64(),
            ms(median(decrypts)),
            ms(median(encrypts)),
        );
    }

    println!(
        "\n### One pbkdf2 derivation (OpenTofu's defaults: 600,000 iterations of sha512, 32 bytes)\n"
    );
    let mut derivations = Vec::new();
    for i in 0..reps {
        let salt = [i as u8; 32];
        let started = Instant::now();
        pbkdf2_key(&Secret::from(PASSPHRASE), &salt, 600_000, "sha512", 32).unwrap();
        derivations.push(started.elapsed());
    }
    let cached = {
        let started = Instant::now();
        pbkdf2_key(&Secret::from(PASSPHRASE), &[0u8; 32], 600_000, "sha512", 32).unwrap();
        started.elapsed()
    };
    println!("| derivation | cached (same passphrase, salt, parameters) |");
    println!("|---|---|");
    println!(
        "| {} | {:.3} ms |",
        ms(median(derivations)),
        cached.as_secs_f64() * 1000.0
    );
}
