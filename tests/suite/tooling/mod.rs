//! `list`/`show`/`rm`/`mv`/`ls`, alone and checked against a real Terraform.

mod commands;
mod terraform;
