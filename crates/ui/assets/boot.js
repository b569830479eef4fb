// Sightline dashboard: loads the WebAssembly bundle and hydrates the page's islands
// (<leptos-island data-component="…">: chart tooltips and zoom, live mode). The page is
// complete without it; this only adds interactivity. The bundle's URLs come from the
// script tag's data-js / data-wasm attributes (versioned by content).
const tag = document.querySelector("script[data-wasm]");

function hydrateIslands(root, mod) {
  for (const el of root.querySelectorAll("leptos-island")) {
    if (el.$$hydrated) continue;
    const island = mod[el.dataset.component];
    if (island) {
      island(el);
      el.$$hydrated = true;
    } else {
      console.warn(`sightline: no island named ${el.dataset.component}`);
    }
  }
}

if (tag) {
  const mod = await import(tag.dataset.js);
  await mod.default({ module_or_path: tag.dataset.wasm });
  mod.hydrate();
  hydrateIslands(document.body, mod);
  // live mode swaps <main> for a fresh copy and hydrates the islands in it
  window.__sightlineHydrate = (root) => hydrateIslands(root, mod);
  document.documentElement.dataset.hydrated = "true";
}
