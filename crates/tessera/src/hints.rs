//! What to do about an error: the lines printed under `error: …` when the
//! client could name the problem (a wrong scheme, a missing certificate pin,
//! a lockout with its `Retry-After`). The client's errors say what is wrong;
//! the flags and the waiting are the command line's words, so they live here.

use tessera_agent::auto::AutoError;
use tessera_agent::enroll::EnrollError;
use tessera_agent::trust::TrustError;
use tessera_agent::AgentError;
use tessera_client::ClientError;

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
        } => vec![format!("try again in {}", wait_in_words(*secs))],
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

/// A wait in the largest unit that reads naturally, rounded up so the user
/// who waits that long is not refused again: "45 seconds", "14 minutes",
/// "2 hours".
pub(crate) fn wait_in_words(secs: u64) -> String {
    fn plural(n: u64, unit: &str) -> String {
        if n == 1 {
            format!("1 {unit}")
        } else {
            format!("{n} {unit}s")
        }
    }
    match secs {
        0..=90 => plural(secs.max(1), "second"),
        91..=7199 => plural(secs.div_ceil(60), "minute"),
        _ => plural(secs.div_ceil(3600), "hour"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_read_as_words_rounded_up() {
        assert_eq!(wait_in_words(0), "1 second");
        assert_eq!(wait_in_words(1), "1 second");
        assert_eq!(wait_in_words(45), "45 seconds");
        assert_eq!(wait_in_words(91), "2 minutes");
        assert_eq!(wait_in_words(840), "14 minutes");
        assert_eq!(wait_in_words(899), "15 minutes");
        assert_eq!(wait_in_words(3600), "60 minutes");
        assert_eq!(wait_in_words(7200), "2 hours");
        assert_eq!(wait_in_words(86_400), "24 hours");
    }

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
