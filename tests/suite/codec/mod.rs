//! The state codec: property tests of what is written and read, and every kind of bad input.

mod bad_input;
mod props;
