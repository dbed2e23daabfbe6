//! Integration tests of berth-server: the whole router, driven with `oneshot` on SQLite and
//! the filesystem store in a temporary directory.

mod api;
mod api_artifacts;
mod api_robots;
mod api_session;
mod support;
