//! Requests that carry a proof of key possession (pairing, enrollment with
//! a token, support-code binding), made for a [`TestServer`] at its clock.

use tessera_agent::enroll::{possession_proof_at, PossessionProof};
use tessera_core::api::{EnrollRequest, SecretString};
use tessera_core::identity::{DeviceKeys, ProofPurpose};

use crate::TestServer;

/// The name, hostname and OS a device reports (and its proof signs).
pub type DeviceFields<'a> = (&'a str, &'a str, &'a str);

impl TestServer {
    /// A proof for `purpose` at this server, made at the server's clock.
    pub fn proof(
        &self,
        keys: &DeviceKeys,
        fields: DeviceFields<'_>,
        purpose: ProofPurpose,
    ) -> PossessionProof {
        possession_proof_at(keys, fields, purpose, &self.url, self.clock.now_ms())
    }

    /// An RFC 8628 device authorization form for `keys`, as the agent
    /// sends it (turn it into pairs with [`form_pairs`]).
    pub fn pairing_form(
        &self,
        keys: &DeviceKeys,
        (name, hostname, os): DeviceFields<'_>,
    ) -> Vec<(&'static str, String)> {
        let p = self.proof(keys, (name, hostname, os), ProofPurpose::Pairing);
        vec![
            ("client_id", "tessera-agent".to_owned()),
            ("identity", keys.document().encode()),
            ("name", name.to_owned()),
            ("hostname", hostname.to_owned()),
            ("os", os.to_owned()),
            ("issued_at", p.issued_at.to_string()),
            ("proof", p.proof),
            ("audience", p.audience),
        ]
    }

    /// A token enrollment request for `keys`, as the agent sends it.
    pub fn enroll_request(
        &self,
        token: &SecretString,
        keys: &DeviceKeys,
        (name, hostname, os): DeviceFields<'_>,
    ) -> EnrollRequest {
        let p = self.proof(keys, (name, hostname, os), ProofPurpose::Enroll);
        EnrollRequest {
            token: token.clone(),
            identity: keys.document().encode(),
            name: name.into(),
            hostname: hostname.into(),
            os: os.into(),
            issued_at: Some(p.issued_at),
            proof: Some(p.proof),
            audience: Some(p.audience),
        }
    }
}

/// A form of owned values as the client's `&[(&str, &str)]`.
pub fn form_pairs<'a>(form: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    form.iter().map(|(k, v)| (*k, v.as_str())).collect()
}
