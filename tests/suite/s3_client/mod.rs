//! The S3 client s3state builds: whole bodies, TLS for plain-http endpoints, credentials,
//! timeouts.

mod assume_role;
mod body_and_tls;
mod profile;
mod timeouts;
