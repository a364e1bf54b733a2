//! `s3state serve`: Terraform's `http` backend over S3.

#[cfg(feature = "dynamodb")]
mod dynamodb;
mod hardening;
mod http;
mod load;
