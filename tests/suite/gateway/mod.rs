//! `s3state serve`: Terraform's `http` backend over S3.

mod delete;
#[cfg(feature = "dynamodb")]
mod dynamodb;
mod hardening;
mod http;
mod in_memory;
mod load;
mod retries;
