// The service worker of an exported site: the page itself (HTML, scripts, style, site.json and
// onnxruntime's loader) answered from the network when it can be reached and from a cache when
// it cannot, so the page opens offline once it has been loaded. The model files are cached by the
// page itself (page.js), under the site's id, and never fetched twice.

const SHELL = "seq2seq-shell";

self.addEventListener("install", (event) => {
  event.waitUntil((async () => {
    const site = await (await fetch("site.json", { cache: "no-store" })).json();
    const cache = await caches.open(SHELL);
    await cache.addAll(["./", ...site.page, ...site.runtime.files.filter((f) => f.endsWith(".mjs")).map((f) => `vendor/${f}`)]);
    await self.skipWaiting();
  })());
});

self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET" || new URL(request.url).origin !== self.location.origin) return;
  event.respondWith((async () => {
    const cache = await caches.open(SHELL);
    const known = await cache.match(request, { ignoreSearch: true });
    if (!known) return fetch(request); // a model file: page.js caches those itself
    try {
      const fresh = await fetch(request, { cache: "no-store" });
      if (fresh.ok) await cache.put(request, fresh.clone());
      return fresh;
    } catch {
      return known;
    }
  })());
});
