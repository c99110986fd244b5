//! Integration tests: real servers on ephemeral loopback ports, real
//! databases (SQLite, or PostgreSQL with TESSERA_TEST_BACKEND=postgres), real
//! HTTP. One test binary, so it links once. The servers, devices and clients
//! come from `tessera_testkit`.

mod agent_failover;
mod audit;
mod audit_checkpoints;
mod audit_cli;
mod auth;
mod auto_revocation;
mod bad_input;
mod cli;
mod cluster_auto;
mod cluster_orders;
mod cluster_relay;
mod console;
mod console_lists;
mod control;
mod demotion;
mod device_names;
mod e2e;
mod e2e_shell;
mod enroll_proof;
mod enroll_retry;
mod enrollment;
mod events;
mod grant_scopes;
mod hostile;
mod limits;
mod lockouts;
mod openapi;
mod ops;
mod pairing;
mod pipes;
mod reset_admin;
mod schema;
mod screen;
mod screen_h264;
mod screen_view;
mod screen_view_desktop;
mod secrets;
mod sessions;
mod shell_lifetime;
mod storage_faults;
mod support;
mod support_scope;
mod support_ui;
mod trusted;
mod user_path;
mod users;
mod viewer_tokens;
