//! `POST /api/v1/events` without the socket: the body goes through the
//! server's JSON extractor (`parse_json`) and the batch validation
//! (`events::prepare`). Neither panics; what they accept is normalised
//! (valid kind, idempotent subject, canonical attributes, a time that
//! prints and parses back), and the event id is stable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_core::api::EventBatch;
use tessera_core::audit::canonical_json;
use tessera_core::events::{normalise_subject, validate_kind};
use tessera_core::Timestamp;
use tessera_fuzz::NOW;
use tessera_server::http::events::prepare;
use tessera_server::http::extract::parse_json;

fuzz_target!(|data: &[u8]| {
    let batch: EventBatch = match parse_json(data) {
        Ok(b) => b,
        Err(e) => {
            assert!(e.status.is_client_error());
            return;
        }
    };
    for e in &batch.events {
        // Whatever the batch's fate, each piece of validation is total.
        let _ = validate_kind(&e.kind);
        if let Ok(s) = normalise_subject(&e.subject) {
            assert_eq!(normalise_subject(&s).as_deref(), Ok(s.as_str()));
        }
        if let Some(t) = Timestamp::parse_rfc3339(&e.occurred_at) {
            let _ = t.to_rfc3339();
        }
        let canonical = canonical_json(&e.attributes);
        let reparsed: serde_json::Value =
            serde_json::from_str(&canonical).expect("canonical JSON parses");
        // Without serde_json's `float_roundtrip` feature, parsing a float
        // may land one ULP off, so a float can drift each time canonical
        // text is parsed again (reported; not a crash). Everything else is
        // a fixed point.
        if !has_float(&e.attributes) {
            assert_eq!(canonical_json(&reparsed), canonical);
        }
    }
    let events = match prepare(&batch, "tenant", "owner", NOW) {
        Ok(events) => events,
        Err(e) => {
            assert!(e.status.is_client_error());
            return;
        }
    };
    assert_eq!(events.len(), batch.events.len());
    for (new, given) in events.iter().zip(&batch.events) {
        assert!(validate_kind(&new.kind).is_ok());
        assert_eq!(new.kind, given.kind);
        assert_eq!(
            normalise_subject(&new.subject).as_deref(),
            Ok(new.subject.as_str())
        );
        assert_eq!(new.event_id.len(), 64);
        let shown = new.occurred_at.to_rfc3339();
        assert_eq!(Timestamp::parse_rfc3339(&shown), Some(new.occurred_at));
        let attributes: serde_json::Value =
            serde_json::from_str(&new.attributes).expect("stored attributes parse");
        assert!(attributes.is_object());
        if !has_float(&attributes) {
            assert_eq!(canonical_json(&attributes), new.attributes);
        }
    }
    // The same batch again gets the same ids: retries are deduplicated.
    if let Ok(again) = prepare(&batch, "tenant", "owner", NOW) {
        for (a, b) in again.iter().zip(&events) {
            assert_eq!(a.event_id, b.event_id);
        }
    }
});

fn has_float(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Number(n) => n.is_f64(),
        serde_json::Value::Array(items) => items.iter().any(has_float),
        serde_json::Value::Object(map) => map.values().any(has_float),
        _ => false,
    }
}
