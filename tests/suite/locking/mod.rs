//! Terraform's `.tflock` lock: taking and releasing it, the turns of waiting updates, unlocks
//! that wait for the writes under them, and every write path honouring a foreign lock.

mod cancelled;
mod tflock;
mod turns;
mod unlock;
mod write_paths;
