//! The integration suite: one test binary (it links the AWS SDK once), organised by behaviour.
//! The harness is `common` (a real S3 on LocalStack, moto for DynamoDB and STS, a fault proxy,
//! a hookable in-memory store, the gateway and a real Terraform); CONTRIBUTING-tests.md maps
//! each module to what it covers.

mod common;

mod architecture;
mod cli;
mod codec;
#[cfg(feature = "dynamodb")]
mod dynamodb;
mod encryption;
mod gateway;
mod history;
mod interop;
mod locking;
mod lost_writes;
mod probe;
mod push;
mod rules;
mod s3_client;
mod simulation;
mod store_contract;
mod stores;
mod tooling;
mod workspaces;
