//! DynamoDB lock items and digests (`dynamodb_table`), alone and with a real Terraform.

mod lock_table;
mod terraform;
