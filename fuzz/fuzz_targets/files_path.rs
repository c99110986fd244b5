//! File names from a sender in an automatic session
//! (`files::safe_relative`): never panics, and what it accepts is a plain
//! relative path of normal parts that cannot leave the inbox it is
//! joined to.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use tessera_agent::files::safe_relative;

fuzz_target!(|data: &[u8]| {
    let Some(s) = tessera_fuzz::text(data) else {
        return;
    };
    let Some(p) = safe_relative(s) else {
        return;
    };
    assert!(p.is_relative());
    assert!(!s.contains('\0'));
    let parts: Vec<Component<'_>> = p.components().collect();
    assert_eq!(parts.len(), s.split('/').count(), "{s:?}");
    assert!(parts.iter().all(|c| matches!(c, Component::Normal(_))));
    let inbox = Path::new("/inbox");
    let joined = inbox.join(&p);
    assert!(joined.starts_with(inbox));
    assert_eq!(joined.components().count(), 2 + parts.len());
});
