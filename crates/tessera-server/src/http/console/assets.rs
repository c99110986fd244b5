//! The console's static files, embedded in the binary: the project's own
//! stylesheet and scripts, and the third-party browser code vendored under
//! `assets/vendor/` (see its `VENDORED.md`). Each is served at a URL that
//! carries a hash of its content, `/assets/<stem>.<hash>.<ext>`, with a
//! one-year immutable cache: a new build that changes a file changes its
//! URL, so no browser keeps a stale copy.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tessera_core::secret::hex;

struct Asset {
    name: &'static str,
    body: &'static [u8],
    content_type: &'static str,
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

const FILES: &[Asset] = &[
    Asset {
        name: "console.css",
        body: include_bytes!("../../../assets/console.css"),
        content_type: CSS,
    },
    Asset {
        name: "console.js",
        body: include_bytes!("../../../assets/console.js"),
        content_type: JS,
    },
    Asset {
        name: "protobuf.js",
        body: include_bytes!("../../../assets/protobuf.js"),
        content_type: JS,
    },
    Asset {
        name: "terminal.js",
        body: include_bytes!("../../../assets/terminal.js"),
        content_type: JS,
    },
    Asset {
        name: "screen.js",
        body: include_bytes!("../../../assets/screen.js"),
        content_type: JS,
    },
    Asset {
        name: "fzstd-0.1.1.min.js",
        body: include_bytes!("../../../assets/vendor/fzstd-0.1.1.min.js"),
        content_type: JS,
    },
    Asset {
        name: "htmx-2.0.4.min.js",
        body: include_bytes!("../../../assets/vendor/htmx-2.0.4.min.js"),
        content_type: JS,
    },
    Asset {
        name: "xterm-5.5.0.js",
        body: include_bytes!("../../../assets/vendor/xterm-5.5.0.js"),
        content_type: JS,
    },
    Asset {
        name: "xterm-5.5.0.css",
        body: include_bytes!("../../../assets/vendor/xterm-5.5.0.css"),
        content_type: CSS,
    },
    Asset {
        name: "xterm-addon-fit-0.10.0.js",
        body: include_bytes!("../../../assets/vendor/xterm-addon-fit-0.10.0.js"),
        content_type: JS,
    },
];

struct Table {
    /// Plain name → hashed URL.
    urls: HashMap<&'static str, String>,
    /// Hashed file name → the asset.
    by_hashed: HashMap<String, &'static Asset>,
}

/// `console.css` → `console.0123456789ab.css`.
fn hashed_name(name: &str, body: &[u8]) -> String {
    let digest = hex(&Sha256::digest(body));
    let short = &digest[..12];
    match name.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}.{short}.{ext}"),
        None => format!("{name}.{short}"),
    }
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut urls = HashMap::new();
        let mut by_hashed = HashMap::new();
        for a in FILES {
            let hashed = hashed_name(a.name, a.body);
            urls.insert(a.name, format!("/assets/{hashed}"));
            by_hashed.insert(hashed, a);
        }
        Table { urls, by_hashed }
    })
}

/// The URL of an embedded file by its plain name. An unknown name (a bug,
/// caught by the tests) yields a URL that answers 404.
pub fn url(name: &str) -> String {
    table()
        .urls
        .get(name)
        .cloned()
        .unwrap_or_else(|| format!("/assets/missing/{name}"))
}

/// `GET /assets/{file}`
pub async fn serve(Path(file): Path<String>) -> Response {
    let Some(a) = table().by_hashed.get(file.as_str()) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let mut resp = a.body.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_has_a_content_hashed_url() {
        for a in FILES {
            let u = url(a.name);
            assert!(u.starts_with("/assets/"), "{u}");
            let file = u.trim_start_matches("/assets/");
            assert!(table().by_hashed.contains_key(file), "{u}");
            assert_ne!(file, a.name);
        }
        assert_eq!(
            hashed_name("a.css", b"x").len(),
            "a.".len() + 12 + ".css".len()
        );
        assert!(url("nope.js").contains("missing"));
    }

    /// Every vendored file is listed in `VENDORED.md` with the sha256 of
    /// exactly the bytes served.
    #[test]
    fn vendored_files_match_their_recorded_checksums() {
        let record = include_str!("../../../assets/vendor/VENDORED.md");
        let vendored = [
            "htmx-2.0.4.min.js",
            "xterm-5.5.0.js",
            "xterm-5.5.0.css",
            "xterm-addon-fit-0.10.0.js",
            "fzstd-0.1.1.min.js",
        ];
        for name in vendored {
            let asset = FILES.iter().find(|a| a.name == name).unwrap();
            let row = record
                .lines()
                .find(|l| l.starts_with(&format!("| {name} |")))
                .unwrap_or_else(|| panic!("{name} is not in VENDORED.md"));
            let recorded = row.trim_end_matches('|').rsplit('|').next().unwrap().trim();
            assert_eq!(recorded, hex(&Sha256::digest(asset.body)), "{name}");
        }
    }
}
