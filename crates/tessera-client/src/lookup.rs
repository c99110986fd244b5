//! "A device" as people type it on the command line, turned into its
//! canonical id. One parser for every command that takes a device:
//!
//! 1. its id, canonical (`ABCD…`, 52 characters) or grouped (`ABCD-EFGH-…`),
//!    any case;
//! 2. its name, exactly as the server (or the trust store) knows it;
//! 3. an unambiguous prefix of its id, at least [`MIN_PREFIX`] characters
//!    (dashes and case ignored).
//!
//! A name or prefix that fits several devices is refused with the list of
//! them; one that fits none says so. Operator commands look names up in the
//! operator's device list, device commands in the peers the device can see
//! and its trust store; the rules are the same.

use std::fmt;

use tessera_core::identity::DeviceId;

use crate::ClientError;

/// The shortest id prefix accepted: 6 base32 characters (30 bits).
pub const MIN_PREFIX: usize = 6;

/// One device a name or prefix may refer to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub name: String,
}

/// Why a typed device named no single device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupError {
    /// Nothing by that name, and not an id or a long enough prefix of one.
    NotFound(String),
    /// Several devices fit; each is listed by name and grouped id.
    Ambiguous {
        typed: String,
        candidates: Vec<Candidate>,
    },
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupError::NotFound(typed) => write!(
                f,
                "no device named {typed:?} (give its name, its id, or at least {MIN_PREFIX} \
                 characters of its id)"
            ),
            LookupError::Ambiguous { typed, candidates } => {
                write!(
                    f,
                    "{typed:?} fits {} devices; use its id:",
                    candidates.len()
                )?;
                for c in candidates {
                    let shown = DeviceId::parse(&c.id)
                        .map(|id| id.grouped())
                        .unwrap_or_else(|_| c.id.clone());
                    write!(f, "\n    {}  {shown}", c.name)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for LookupError {}

/// `typed` as a canonical id, with dashes and spaces dropped and letters
/// upper-cased: what an id prefix is compared in.
fn compact(typed: &str) -> String {
    typed
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase()
}

/// Resolves `typed` against `candidates` (see the module's rules). A full id
/// is accepted even when no candidate has it: the server then answers for
/// it (a device the caller cannot see is "not found" there).
pub fn resolve(typed: &str, candidates: &[Candidate]) -> Result<String, LookupError> {
    let typed = typed.trim();
    if let Ok(id) = DeviceId::parse(typed) {
        return Ok(id.to_string());
    }
    let mut seen: Vec<Candidate> = Vec::new();
    let push = |c: &Candidate, seen: &mut Vec<Candidate>| {
        if !seen.iter().any(|s| s.id == c.id) {
            seen.push(c.clone());
        }
    };
    for c in candidates.iter().filter(|c| c.name == typed) {
        push(c, &mut seen);
    }
    if seen.is_empty() {
        let prefix = compact(typed);
        let base32 = prefix
            .chars()
            .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c));
        if prefix.len() >= MIN_PREFIX && base32 {
            for c in candidates.iter().filter(|c| c.id.starts_with(&prefix)) {
                push(c, &mut seen);
            }
        }
    }
    match seen.len() {
        0 => Err(LookupError::NotFound(typed.to_owned())),
        1 => Ok(seen.remove(0).id),
        _ => Err(LookupError::Ambiguous {
            typed: typed.to_owned(),
            candidates: seen,
        }),
    }
}

/// What a device lookup can fail with: the server's error, or the typed
/// text naming no single device.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl crate::ApiClient {
    /// A device as an operator typed it, resolved through the operator's
    /// device list (an id needs no request). Live devices are preferred: a
    /// name reused after a revocation means the live device.
    pub async fn resolve_device(&self, typed: &str) -> Result<String, ResolveError> {
        if let Ok(id) = DeviceId::parse(typed.trim()) {
            return Ok(id.to_string());
        }
        let devices = self.list_devices().await?;
        let live: Vec<Candidate> = devices
            .iter()
            .filter(|d| !d.revoked)
            .map(|d| Candidate {
                id: d.id.clone(),
                name: d.name.clone(),
            })
            .collect();
        match resolve(typed, &live) {
            Err(LookupError::NotFound(_)) => {
                let all: Vec<Candidate> = devices
                    .iter()
                    .map(|d| Candidate {
                        id: d.id.clone(),
                        name: d.name.clone(),
                    })
                    .collect();
                Ok(resolve(typed, &all)?)
            }
            r => Ok(r?),
        }
    }

    /// A device as a device's owner typed it, resolved through the peers
    /// this device can see on the server and `known` (its trust store's ids
    /// and local names, which win over the server's names).
    pub async fn resolve_peer(
        &self,
        typed: &str,
        known: &[Candidate],
    ) -> Result<String, ResolveError> {
        if let Ok(id) = DeviceId::parse(typed.trim()) {
            return Ok(id.to_string());
        }
        match resolve(typed, known) {
            Ok(id) => return Ok(id),
            Err(e @ LookupError::Ambiguous { .. }) => return Err(e.into()),
            Err(LookupError::NotFound(_)) => {}
        }
        let peers: Vec<Candidate> = self
            .peers()
            .await?
            .into_iter()
            .map(|p| Candidate {
                id: p.device_id,
                name: p.name,
            })
            .collect();
        Ok(resolve(typed, &peers)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::identity::DeviceKeys;

    fn cand(name: &str) -> Candidate {
        Candidate {
            id: DeviceKeys::generate().device_id().to_string(),
            name: name.into(),
        }
    }

    #[test]
    fn every_form_of_an_id_and_a_name_resolve() {
        let a = cand("laptop");
        let b = cand("desk");
        let all = [a.clone(), b.clone()];
        let grouped = DeviceId::parse(&a.id).unwrap().grouped();
        assert_eq!(resolve(&a.id, &all).unwrap(), a.id);
        assert_eq!(resolve(&grouped, &all).unwrap(), a.id);
        assert_eq!(resolve(&grouped.to_lowercase(), &all).unwrap(), a.id);
        assert_eq!(resolve("laptop", &all).unwrap(), a.id);
        assert_eq!(resolve(&a.id[..MIN_PREFIX], &all).unwrap(), a.id);
        assert_eq!(resolve(&grouped[..9].to_lowercase(), &all).unwrap(), a.id);
    }

    #[test]
    fn ambiguity_lists_the_candidates_and_unknown_says_so() {
        let a = cand("twin");
        let b = cand("twin");
        let e = resolve("twin", &[a.clone(), b.clone()]).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("fits 2 devices"), "{text}");
        assert!(
            text.contains(&DeviceId::parse(&a.id).unwrap().grouped()),
            "{text}"
        );
        assert!(
            text.contains(&DeviceId::parse(&b.id).unwrap().grouped()),
            "{text}"
        );
        let e = resolve("nosuch", std::slice::from_ref(&a)).unwrap_err();
        assert_eq!(e, LookupError::NotFound("nosuch".into()));
        assert!(e.to_string().contains("no device named \"nosuch\""));
        // Too short a prefix is not a prefix.
        let short = &a.id[..MIN_PREFIX - 1];
        assert!(matches!(
            resolve(short, std::slice::from_ref(&a)),
            Err(LookupError::NotFound(_))
        ));
        // Two ids sharing a prefix.
        let mut c = a.clone();
        c.id = format!("{}{}", &a.id[..MIN_PREFIX], &b.id[MIN_PREFIX..]);
        c.name = "other".into();
        let prefix = a.id[..MIN_PREFIX].to_owned();
        assert!(matches!(
            resolve(&prefix, &[a, c]),
            Err(LookupError::Ambiguous { .. })
        ));
    }
}
