//! portcullis: a policy decision point on every path an autonomous agent uses to act.
//!
//! Imports flow one way (DESIGN §6): `cli → server → proxy → gate → {policy, audit, normalize} →
//! action`.
//! `policy`, `audit`, `normalize` and `action` know nothing about HTTP.

pub mod action;
pub mod audit;
pub mod body;
pub mod ca;
pub mod cli;
pub mod config;
pub mod gate;
pub mod input;
pub mod metrics;
pub mod normalize;
pub mod policy;
pub mod proxy;
pub mod sandbox;
pub mod server;
mod sync;
