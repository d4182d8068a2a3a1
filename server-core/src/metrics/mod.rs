//! One `/metrics` for the whole server (`--metrics-bind`), whichever worker did the work.
//!
//! Workers count into memory shared across the fork ([`region`]); the parent adds what
//! only it knows; a small child of the parent renders it all as Prometheus text
//! ([`serve`], [`render`]). See `docs/metrics-and-limits.md` for the names.

pub(crate) mod record;
pub(crate) mod region;
pub(crate) mod render;
pub(crate) mod serve;

pub(crate) use region::{become_worker, count_requests, Region};
