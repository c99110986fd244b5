//! What the fuzz targets share: fixed keys and a fixed clock, so a crash
//! found once reproduces from its input alone.

use std::sync::LazyLock;

use tessera_core::identity::DeviceKeys;
use tessera_core::Timestamp;

/// The server's clock in every target (2027-01-15).
pub const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);

/// The signer whose key the targets verify against.
pub static SIGNER: LazyLock<DeviceKeys> = LazyLock::new(|| keys(7));

/// Anyone else.
pub static OTHER: LazyLock<DeviceKeys> = LazyLock::new(|| keys(9));

fn keys(fill: u8) -> DeviceKeys {
    match DeviceKeys::from_bytes(&[fill; tessera_core::identity::PRIVATE_KEYS_LEN]) {
        Some(k) => k,
        None => unreachable!("64 bytes are a valid private key pair"),
    }
}

/// Input as text, the way the server sees a JSON string or a header:
/// only valid UTF-8 gets that far.
pub fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}
