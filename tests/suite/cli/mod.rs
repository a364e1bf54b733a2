//! The `s3state` command: every command, happy and failing, and no secret ever printed.

mod commands;
mod encrypted;
mod interrupt;
mod secrets;
mod stderr;
