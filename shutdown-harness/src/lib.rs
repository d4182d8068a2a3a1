//! The shutdown harness: launches any HTTP server, drives traffic at it, sends it a signal
//! and classifies every request, so that a dropped request can never go unnoticed.
//!
//! A run has three parts, one concern each: a [`Plan`] (what to do and what to expect),
//! an [`Observation`] (what happened, gathered by [`run::observe`], the only I/O), and a
//! verdict (`judge::judge`, pure, unit-tested). The binary (`shutdown-harness`) is a thin
//! shell over [`run::run`]; tests of other crates call the library directly.

#![forbid(unsafe_code)]

pub mod client;
pub mod error;
pub mod judge;
pub mod launcher;
pub mod observation;
pub mod outcome;
pub mod plan;
pub mod report;
pub mod response;
pub mod run;
pub mod scenario;
pub mod svg;

pub use error::HarnessError;
pub use launcher::ServerCommand;
pub use observation::{Observation, RequestRecord, ServerExit};
pub use outcome::Outcome;
pub use plan::{Disruption, Expectation, Plan};
pub use report::Report;
pub use run::run;
pub use scenario::{Scenario, TrafficOverrides};
