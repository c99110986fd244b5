//! Tessera's wire messages, generated from `proto/tessera.proto`, and the
//! protocol's size limits and version. No logic lives here.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/tessera.v1.rs"));
}

/// Protocol version spoken by this build.
pub const PROTOCOL_VERSION: u32 = 1;
