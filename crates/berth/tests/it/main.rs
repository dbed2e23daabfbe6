//! Integration tests: each starts the real `berth` binary on a free loopback port with a fresh
//! data directory and drives it over HTTP.

mod access;
mod api;
mod bad_input;
mod crash;
mod fault_proxy;
mod fleet;
mod fleet_faults;
mod gc;
mod harness;
mod immutable;
mod jobs;
mod large;
mod mgmt;
mod oidc;
mod quota;
mod rbac;
mod redirect;
mod retention;
mod revocation;
mod s3_faults;
mod scrub;
mod secrets;
mod server;
mod storage;
