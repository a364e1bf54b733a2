//! s3state on S3-compatible stores that differ from AWS (issue 25): the refusals of real
//! stores emulated with the fault proxy in front of the store under test (`emulated`), and the
//! probe's verdict on the store under test and on moto checked against what the suite finds
//! there (`verdict`).

mod emulated;
mod verdict;
