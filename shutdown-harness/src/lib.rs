//! The shutdown harness: launches any HTTP server, drives traffic at it, sends it a signal
//! and classifies every request, so that a dropped request can never go unnoticed.
//!
//! The binary (`shutdown-harness`) is a thin shell over [`run::run`]; tests of other
//! crates call the library directly.

pub mod client;
pub mod error;
pub mod launcher;
pub mod outcome;
pub mod report;
pub mod response;
pub mod run;
pub mod scenario;
pub mod svg;

pub use error::HarnessError;
pub use launcher::ServerCommand;
pub use outcome::Outcome;
pub use report::Report;
pub use run::{run, Plan};
pub use scenario::{Scenario, TrafficOverrides};
