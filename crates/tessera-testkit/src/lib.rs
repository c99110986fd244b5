//! The test kit: real Tessera servers on ephemeral loopback ports with fresh
//! databases on the backend under test, and the clients that drive them
//! (operators, enrolled devices, agents, viewers, raw device sockets). The
//! integration tests of the `tessera` crate use it in process
//! ([`TestServer`]); the benchmarks run the server binary as a child
//! process ([`ServerProcess`]).
//!
//! The backend comes from `TESSERA_TEST_BACKEND` (`sqlite`, the default, or
//! `postgres`). For PostgreSQL every test creates its own database on the
//! server named by `TESSERA_TEST_PG_URL` (default: the local trust-auth
//! server), named with `TESSERA_TEST_PG_PREFIX` so a CI run can drop them all.
//!
//! Test code: failures panic with what went wrong, except where a caller
//! outside tests (the benchmarks) needs a `Result`.

mod balancer;
mod db;
mod device;
mod nats;
mod pg;
mod process;
mod proofs;
mod pty;
mod screen;
mod server;
mod viewer;
mod x11;

use std::time::Duration;

pub use balancer::Balancer;
pub use db::{backend, pg_admin_url, Backend, OpenWrite, TestDb};
pub use device::{online_device, open_ws, open_ws_with, Refusal, RunningAgent, TestDevice, Ws};
pub use nats::PrivateNats;
pub use pg::PrivatePostgres;
pub use process::{
    cpu_time, ctl, ctl_admin, device_cmd, peak_rss, proc_status_kb, tessera_bin, view,
    AgentProcess, ServerProcess,
};
pub use proofs::{form_pairs, DeviceFields};
pub use pty::Terminal;
pub use screen::{screen, screen_body, HandDevice, HandViewer, Next};
pub use server::{
    fast_heartbeat, http_client, nats_url, Configure, Options, TestServer, METRICS_TOKEN,
};
pub use viewer::{read_until, shell_session, watch};
pub use x11::{pattern, state as x_state, XInput, XTestClient, Xvfb};

/// Polls `check` every 20 ms until it holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
