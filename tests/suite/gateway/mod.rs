//! `s3state serve`: Terraform's `http` backend over S3.

mod attacks;
mod delete;
#[cfg(feature = "dynamodb")]
mod dynamodb;
mod encryption;
mod hardening;
mod http;
mod in_memory;
mod load;
mod oidc;
mod retries;
mod shutdown;
mod ui;
