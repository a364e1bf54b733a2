//! `RemoteState::push` (`s3state push`), judged from the stored head.

mod memory;
mod s3;
mod terraform;
