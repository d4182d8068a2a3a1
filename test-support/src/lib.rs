//! Support shared by the workspace's test programs.
//!
//! A test that starts a server must end it, passed or failed: a server left behind keeps
//! its port and its workers, and later runs measure against it (issue 25 found a debug
//! `server-cli` with two workers, adopted by init, 35 minutes after `cargo test` passed).
//! [`watch_for_leftovers`] makes the test program the reaper of everything it starts, so
//! that an orphaned descendant comes back to it, and fails the program at exit if any is
//! still running.

pub mod leftovers;

pub use leftovers::watch_for_leftovers;
