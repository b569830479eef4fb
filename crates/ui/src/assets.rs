//! Files compiled into the binary: the stylesheet and the script that loads the bundle.

/// `GET /assets/sightline.css`.
pub(crate) const CSS_PATH: &str = "/assets/sightline.css";
pub(crate) const CSS: &str = include_str!("../assets/sightline.css");

/// `GET /assets/boot.js`: loads the WebAssembly bundle and hydrates the page's islands.
/// A file rather than an inline script so the Content-Security-Policy can forbid inline
/// script altogether.
pub(crate) const BOOT_PATH: &str = "/assets/boot.js";
pub(crate) const BOOT: &str = include_str!("../assets/boot.js");

/// FNV-1a of the stylesheet and the boot script: part of their URLs so they can be cached
/// for good and a new build's files are fetched at once.
pub(crate) const CSS_VERSION: u64 = fnv1a(CSS.as_bytes());
pub(crate) const BOOT_VERSION: u64 = fnv1a(BOOT.as_bytes());

pub(crate) const fn fnv1a(bytes: &[u8]) -> u64 {
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

/// The boot script's URL, versioned by content.
pub(crate) fn boot_href() -> String {
    format!("{BOOT_PATH}?v={BOOT_VERSION:016x}")
}
