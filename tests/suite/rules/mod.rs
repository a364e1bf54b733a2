//! Terraform's state rules through `RemoteState`: serials, lineages, conflicts, the statemgr
//! contract, racing writers, and what each operation costs in requests.

mod concurrency;
mod conformance;
mod memory;
mod requests;
