//! The WebAssembly bundle built by `scripts/build-ui`: found on disk at start, held in
//! memory, served under `/pkg/`. Without it the dashboard is plain server-rendered HTML.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use axum::body::Bytes;

use crate::assets::fnv1a;

/// The bundle's JavaScript glue (wasm-bindgen `--target web`) and module, under `pkg/`.
pub(crate) const JS_FILE: &str = "sightline_ui.js";
pub(crate) const WASM_FILE: &str = "sightline_ui_bg.wasm";

/// Where the bundle is looked for when `SIGHTLINE_SITE_DIR` is not set: `site/` in any of
/// the executable's first ancestors, which finds `target/site` from `target/release/` and
/// from test binaries in `target/debug/deps/`.
const SEARCH_DEPTH: usize = 4;

/// The dashboard's static site: the bundle, if one was built.
#[derive(Clone, Default)]
pub struct Site {
    bundle: Option<Arc<Bundle>>,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site")
            .field("hydrated", &self.bundle.is_some())
            .finish()
    }
}

pub(crate) struct Bundle {
    pub(crate) js: Asset,
    pub(crate) wasm: Asset,
    /// Content hash of both files: part of their URLs, so they can be cached for good.
    pub(crate) version: String,
}

/// One file, with the precompressed siblings the build wrote (`.gz`, `.br`), if any.
pub(crate) struct Asset {
    pub(crate) plain: Bytes,
    pub(crate) gzip: Option<Bytes>,
    pub(crate) brotli: Option<Bytes>,
}

impl Asset {
    fn read(path: &Path) -> Option<Asset> {
        let plain = std::fs::read(path).ok()?;
        let sibling = |ext: &str| {
            let mut name = path.as_os_str().to_owned();
            name.push(ext);
            std::fs::read(PathBuf::from(name)).ok().map(Bytes::from)
        };
        Some(Asset {
            gzip: sibling(".gz"),
            brotli: sibling(".br"),
            plain: Bytes::from(plain),
        })
    }
}

impl Site {
    /// No bundle: pages render without hydration.
    pub fn without_bundle() -> Site {
        Site::default()
    }

    /// The bundle under `dir/pkg/`, or none if it is not there.
    pub fn from_dir(dir: &Path) -> Site {
        let pkg = dir.join("pkg");
        let bundle = Asset::read(&pkg.join(JS_FILE))
            .zip(Asset::read(&pkg.join(WASM_FILE)))
            .map(|(js, wasm)| {
                let hash = fnv1a(&wasm.plain) ^ fnv1a(&js.plain).rotate_left(1);
                Arc::new(Bundle {
                    js,
                    wasm,
                    version: format!("{hash:016x}"),
                })
            });
        Site { bundle }
    }

    /// The bundle from `SIGHTLINE_SITE_DIR`, or else from `site/` next to (or above) the
    /// executable (`target/site` for `target/release/sightline`). Looked up once per
    /// process; a missing bundle is logged once, as a warning.
    pub fn locate() -> Site {
        static SITE: OnceLock<Site> = OnceLock::new();
        SITE.get_or_init(|| {
            let dir = std::env::var_os("SIGHTLINE_SITE_DIR")
                .map(PathBuf::from)
                .or_else(search_from_exe);
            let site = dir.as_deref().map(Site::from_dir).unwrap_or_default();
            if site.bundle.is_none() {
                tracing::warn!(
                    dir = ?dir,
                    "dashboard bundle not found (run scripts/build-ui or set SIGHTLINE_SITE_DIR): \
                     pages are served without interactive charts and live mode"
                );
            }
            site
        })
        .clone()
    }

    /// A bundle is there: pages load it.
    pub fn hydrates(&self) -> bool {
        self.bundle.is_some()
    }

    pub(crate) fn bundle(&self) -> Option<&Bundle> {
        self.bundle.as_deref()
    }
}

fn search_from_exe() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .take(SEARCH_DEPTH)
        .map(|dir| dir.join("site"))
        .find(|site| site.join("pkg").join(WASM_FILE).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_is_read_with_its_compressed_siblings() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!Site::from_dir(dir.path()).hydrates());
        let pkg = dir.path().join("pkg");
        std::fs::create_dir_all(&pkg).expect("mkdir");
        std::fs::write(pkg.join(JS_FILE), "export default 1").expect("js");
        assert!(!Site::from_dir(dir.path()).hydrates(), "wasm missing");
        std::fs::write(pkg.join(WASM_FILE), b"\0asm").expect("wasm");
        std::fs::write(pkg.join(format!("{WASM_FILE}.gz")), b"gz").expect("gz");
        let site = Site::from_dir(dir.path());
        let bundle = site.bundle().expect("bundle");
        assert_eq!(&bundle.wasm.plain[..], b"\0asm");
        assert_eq!(bundle.wasm.gzip.as_deref(), Some(&b"gz"[..]));
        assert!(bundle.wasm.brotli.is_none());
        assert_eq!(bundle.version.len(), 16);
    }
}
