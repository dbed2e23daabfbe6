//! Integration tests of berth-server: the whole router, driven with `oneshot` on SQLite (or,
//! with `BERTH_TEST_BACKEND=fleet`, a fresh PostgreSQL database) and the filesystem store in a
//! temporary directory.

mod api;
mod api_artifacts;
mod api_robots;
mod api_session;
mod support;
