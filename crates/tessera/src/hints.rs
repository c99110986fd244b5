//! What to do about an error: the lines printed under `error: …` when the
//! client could name the problem (a wrong scheme, a missing certificate pin,
//! a lockout with its `Retry-After`). The client's errors say what is wrong;
//! the flags and the waiting are the command line's words, so they live here.

use std::time::Duration;

use tessera_agent::auto::AutoError;
use tessera_agent::enroll::EnrollError;
use tessera_agent::trust::TrustError;
use tessera_agent::AgentError;
use tessera_client::lookup::ResolveError;
use tessera_client::ClientError;
use tessera_core::clock::wait_in_words;

/// The advice for `e`, one line each; empty when there is none.
pub(crate) fn for_error(e: &anyhow::Error) -> Vec<String> {
    let Some(client) = client_error(e) else {
        return Vec::new();
    };
    match client {
        ClientError::PlainHttpServer { url } => vec![format!(
            "the server does not use TLS: use {} instead",
            url.replacen("https://", "http://", 1)
        )],
        ClientError::NotPlainHttp { url } => vec![format!(
            "if it uses TLS, use {} instead",
            url.replacen("http://", "https://", 1)
        )],
        ClientError::UnknownIssuer { .. } => vec![
            "if it is Tessera's self-signed certificate, pass --tls-fingerprint <the SHA-256 \
             the server printed at start>"
                .to_owned(),
            "if your own authority issued it, pass --ca-cert <its PEM file>".to_owned(),
        ],
        ClientError::FingerprintMismatch { .. } => vec![
            "compare --tls-fingerprint with the SHA-256 the server printed at start; if the \
             server's certificate was replaced, log in or enroll again with the new one"
                .to_owned(),
        ],
        ClientError::Api {
            retry_after: Some(secs),
            ..
        } => vec![format!(
            "try again in {}",
            wait_in_words(Duration::from_secs(*secs))
        )],
        _ => Vec::new(),
    }
}

/// The client error behind `e`, if any. The agent's errors wrap one
/// transparently, which hides it from `source()`, so those are opened by
/// hand.
fn client_error(e: &anyhow::Error) -> Option<&ClientError> {
    e.chain().find_map(|cause| {
        if let Some(c) = cause.downcast_ref::<ClientError>() {
            return Some(c);
        }
        if let Some(EnrollError::Server(c)) = cause.downcast_ref::<EnrollError>() {
            return Some(c);
        }
        if let Some(ResolveError::Client(c)) = cause.downcast_ref::<ResolveError>() {
            return Some(c);
        }
        if let Some(a) = cause.downcast_ref::<AgentError>() {
            return from_agent(a);
        }
        match cause.downcast_ref::<TrustError>() {
            Some(TrustError::Server(c)) => return Some(c),
            Some(TrustError::Agent(a)) => return from_agent(a),
            _ => {}
        }
        match cause.downcast_ref::<AutoError>() {
            Some(AutoError::Agent(a)) => from_agent(a),
            _ => None,
        }
    })
}

fn from_agent(e: &AgentError) -> Option<&ClientError> {
    match e {
        AgentError::Client(c) => Some(c),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lockout_hint_names_the_wait() {
        let e = anyhow::Error::from(ClientError::Api {
            status: 429,
            code: "locked_out".into(),
            message: "too many failed logins".into(),
            retry_after: Some(840),
        });
        assert_eq!(for_error(&e), vec!["try again in 14 minutes".to_owned()]);
        let wrapped = anyhow::Error::from(EnrollError::Server(ClientError::Api {
            status: 429,
            code: "rate_limited".into(),
            message: "slow down".into(),
            retry_after: Some(30),
        }));
        assert_eq!(
            for_error(&wrapped),
            vec!["try again in 30 seconds".to_owned()]
        );
        let deep = anyhow::Error::from(AutoError::Agent(AgentError::Client(
            ClientError::PlainHttpServer {
                url: "https://127.0.0.1:8080".into(),
            },
        )));
        assert_eq!(
            for_error(&deep),
            vec!["the server does not use TLS: use http://127.0.0.1:8080 instead".to_owned()]
        );
    }
}
