//! `s3state serve`: Terraform's `http` backend over S3.

#[cfg(feature = "dynamodb")]
mod dynamodb;
#[cfg(feature = "dynamodb")]
mod dynamodb_attacks;
mod http;
mod load;
