//! The allocator of the extension module's own (Rust) allocations: mimalloc.
//!
//! Measured with callgrind, one worker, a new connection per request (plain ASGI app):
//! glibc's malloc, free and their consolidation were 10k of the 87k instructions per
//! request, hyper's per-connection buffers and tokio's task cells most of them. granian
//! links jemalloc for the same reason. mimalloc builds from one C file (jemalloc's
//! configure would add a minute to a fresh CI build), and its `local_dynamic_tls` model
//! is the one for a library loaded with `dlopen`, as CPython loads extension modules.
//!
//! The global allocator is declared here, in the cdylib's crate, so it applies to the
//! worker's module only: server-cli depends on this crate for build order and never links
//! it, so the parent keeps glibc's allocator and its small resident set.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
