//! `RemoteState::push` (`s3state push`), judged from the stored head.

mod head;
mod header_lineage;
mod memory;
mod sse_c;
mod terraform;
