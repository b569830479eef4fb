//! The stylesheet, compiled into the binary.

/// `GET /assets/sightline.css`.
pub(crate) const CSS_PATH: &str = "/assets/sightline.css";

pub(crate) const CSS: &str = include_str!("../assets/sightline.css");

/// FNV-1a of the stylesheet: part of its URL so it can be cached for good and a new build's
/// stylesheet is fetched at once.
pub(crate) const CSS_VERSION: u64 = fnv1a(CSS.as_bytes());

const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

/// The stylesheet's URL, versioned by content.
pub(crate) fn css_href() -> String {
    format!("{CSS_PATH}?v={CSS_VERSION:016x}")
}
