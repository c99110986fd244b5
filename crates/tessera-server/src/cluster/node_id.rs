//! A node's id: given (`--node-id`) or generated once into
//! `<data_dir>/node.id`, so a restarted node is the same node.

use std::path::Path;

/// Letters, digits and dashes, 1–63 long, starting with a letter or digit:
/// it is one token of a NATS subject and fits a DNS label.
pub fn is_valid(id: &str) -> bool {
    (1..=63).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
}

/// Why a node id cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NodeIdError {
    #[error(
        "node id `{0}` is not valid: use 1 to 63 lowercase letters, digits and dashes, \
         not starting with a dash"
    )]
    Invalid(String),
    #[error("cannot read or create the node id file {path}: {source}")]
    File {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// `given` if valid, else the id kept in `<data_dir>/node.id` (created
/// with a random id the first time).
pub fn resolve(given: Option<&str>, data_dir: &Path) -> Result<String, NodeIdError> {
    if let Some(id) = given {
        return if is_valid(id) {
            Ok(id.to_owned())
        } else {
            Err(NodeIdError::Invalid(id.to_owned()))
        };
    }
    let path = data_dir.join("node.id");
    let file = |source| NodeIdError::File {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            if is_valid(id) {
                Ok(id.to_owned())
            } else {
                Err(NodeIdError::Invalid(id.to_owned()))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = format!("node-{}", fresh());
            crate::fsutil::write_private(&path, format!("{id}\n").as_bytes()).map_err(file)?;
            Ok(id)
        }
        Err(e) => Err(file(e)),
    }
}

/// Twelve random lowercase hex digits.
pub fn fresh() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_subject_tokens() {
        assert!(is_valid("node-1") && is_valid("a") && is_valid(&"x".repeat(63)));
        for bad in ["", "-a", "A", "a.b", "a*", "a>", "a b", &"x".repeat(64)] {
            assert!(!is_valid(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_generated_id_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = resolve(None, dir.path()).unwrap();
        assert!(is_valid(&first));
        assert_eq!(resolve(None, dir.path()).unwrap(), first);
        assert_eq!(resolve(Some("n2"), dir.path()).unwrap(), "n2");
        assert!(matches!(
            resolve(Some("N2"), dir.path()),
            Err(NodeIdError::Invalid(_))
        ));
    }
}
