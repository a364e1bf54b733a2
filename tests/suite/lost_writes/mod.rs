//! Writes that got no answer: lost responses, resets, stalls and faults, recognised and applied
//! exactly once, and the settle that keeps the lock until such a write can no longer land.

mod ambiguous;
mod exactly_once;
mod faults;
mod regressions;
mod settle;
