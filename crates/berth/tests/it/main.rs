//! Integration tests: each starts the real `berth` binary on a free loopback port with a fresh
//! data directory and drives it over HTTP.

mod api;
mod bad_input;
mod crash;
mod fleet;
mod harness;
mod jobs;
mod server;
