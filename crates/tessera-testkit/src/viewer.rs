//! Operators watching sessions through the viewer WebSocket.

use std::time::Duration;

use tessera_client::viewer::{ViewerEvent, ViewerReceiver, ViewerSender};
use tessera_client::ApiClient;

/// Opens a managed shell session on `device` with the session's default
/// access (`control`); returns its id.
pub async fn shell_session(client: &ApiClient, device: &str) -> String {
    client
        .create_session(&tessera_core::api::CreateSessionRequest {
            device: device.to_owned(),
            access: None,
            channel: None,
        })
        .await
        .expect("session")
        .id
}

/// Joins `session` as the operator behind `client`; returns the viewer's
/// halves and the access it was given.
pub async fn watch(client: &ApiClient, session: &str) -> (ViewerSender, ViewerReceiver, String) {
    let token = client.viewer_token(session).await.expect("viewer token");
    let (tx, mut rx) = tessera_client::viewer::connect(client, session, &token.token)
        .await
        .expect("viewer connects");
    match rx.next().await {
        ViewerEvent::Ready { access, .. } => (tx, rx, access),
        other => panic!("expected Ready, got {other:?}"),
    }
}

/// Reads viewer output until it contains `needle`; returns all of it.
pub async fn read_until(rx: &mut ViewerReceiver, needle: &str, limit: Duration) -> String {
    let mut seen = String::new();
    let found = tokio::time::timeout(limit, async {
        loop {
            match rx.next().await {
                ViewerEvent::Output(data) => {
                    seen.push_str(&String::from_utf8_lossy(&data));
                    if seen.contains(needle) {
                        return true;
                    }
                }
                ViewerEvent::Closed { .. } => return false,
                _ => {}
            }
        }
    })
    .await;
    assert!(matches!(found, Ok(true)), "never saw {needle:?} in: {seen}");
    seen
}
