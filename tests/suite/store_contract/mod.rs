//! The `Store` contract: the in-memory store against the conformance suite, and the checks that
//! catch a store ignoring its conditions.

mod ignores_conditions;
mod memory;
