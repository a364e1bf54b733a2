//! Terraform's `.tflock` lock: taking and releasing it, the turns of waiting updates, unlocks
//! that wait for the writes under them, every write path honouring a foreign lock, and fair
//! turns across processes.

mod across_processes;
mod cancelled;
mod tflock;
mod turns;
mod unlock;
mod write_paths;
