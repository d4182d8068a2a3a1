//! The shutdown harness: launches any HTTP server, drives traffic at it, sends it a signal
//! and classifies every request, so that a dropped request can never go unnoticed.
//!
//! A run has three parts, one concern each: a [`Plan`] (what to do and what to expect),
//! an [`Observation`] (what happened, gathered by [`run::observe`], the only I/O), and a
//! verdict (`judge::judge`, pure, unit-tested). The binary (`shutdown-harness`) is a thin
//! shell over [`run::run`]; tests of other crates call the library directly.

#![forbid(unsafe_code)]

pub mod cli;
mod disrupt_command;
pub mod error;
pub mod judge;
pub mod launcher;
mod long_lived;
pub mod observation;
pub mod outcome;
pub mod plan;
mod remote;
pub mod report;
pub mod request;
pub mod response;
pub mod run;
pub mod scenario;
pub mod svg;
pub mod target;
pub mod tls;
pub mod traffic;
pub mod transport;

pub use error::HarnessError;
pub use launcher::ServerCommand;
pub use observation::{CommandRun, Observation, RequestRecord, ServerExit};
pub use outcome::Outcome;
pub use plan::{Disruption, Expectation, Plan};
pub use report::Report;
pub use request::{OkStatus, RequestShape};
pub use run::run;
pub use scenario::{Scenario, TrafficOverrides};
pub use target::{Scheme, Target, UrlTarget};
pub use tls::Trust;
pub use transport::{ClientLibrary, HttpVersion};
