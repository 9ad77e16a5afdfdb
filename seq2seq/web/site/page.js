// The page of an exported site: loads site.json, the graphs and the tokenizer tables (with a
// progress bar, into a cache so that a second visit and an offline one load nothing), then
// translates or generates with onnxruntime-web. Nothing is sent anywhere.

import { Pieces } from "./pieces.js";
import { LanguageModel, Translation } from "./search.js";

const $ = (id) => document.getElementById(id);
const MODEL_CACHE = "seq2seq-model-";

function showError(error) {
  $("error").textContent = String(error && error.message ? error.message : error);
  console.error(error);
}

// onnxruntime-web's calls resolve without giving the browser a turn to paint: a step to the
// event loop every frame or so shows the text as it arrives.
let lastTurn = 0;
async function letThePagePaint() {
  if (performance.now() - lastTurn < 30) return;
  await new Promise((resolve) => setTimeout(resolve, 0));
  lastTurn = performance.now();
}

function megabytes(bytes) {
  return (bytes / 1e6).toFixed(1);
}

// Every file of the model, from the site's cache when it is there, else from the server (read
// in chunks, so the bar moves), then kept in the cache for the next visit.
async function loadFiles(site) {
  const cacheName = MODEL_CACHE + site.id;
  const cache = "caches" in self ? await caches.open(cacheName) : null;
  if (cache) {
    for (const name of await caches.keys()) if (name.startsWith(MODEL_CACHE) && name !== cacheName) caches.delete(name);
  }
  const total = site.files.reduce((sum, f) => sum + f.bytes, 0);
  let loaded = 0;
  const progress = () => {
    $("progress").value = loaded / total;
    $("status").textContent = `Loading the model: ${megabytes(loaded)} of ${megabytes(total)} MB`;
  };
  const buffers = {};
  for (const file of site.files) {
    let response = cache ? await cache.match(file.path) : undefined;
    const fromCache = Boolean(response);
    if (!response) response = await fetch(file.path);
    if (!response.ok) throw new Error(`${file.path}: ${response.status} ${response.statusText}`);
    // Stored while it is read (awaited at the end, so the bar moves with the download); a full
    // or refused cache only means the next visit downloads again.
    const stored = !fromCache && cache ? cache.put(file.path, response.clone()).catch(() => {}) : null;
    const reader = response.body.getReader();
    const bytes = new Uint8Array(file.bytes);
    let at = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (at + value.length > file.bytes) throw new Error(`${file.path} is larger than site.json says (${file.bytes} bytes)`);
      bytes.set(value, at);
      at += value.length;
      loaded += value.length;
      progress();
    }
    if (at !== file.bytes) throw new Error(`${file.path}: ${at} bytes, site.json says ${file.bytes}`);
    await stored;
    buffers[file.path] = bytes;
  }
  return buffers;
}

async function start() {
  const started = performance.now();
  if ("serviceWorker" in navigator) navigator.serviceWorker.register("offline.js").catch(showError);
  const site = await (await fetch("site.json")).json();
  const ort = await import("./vendor/ort.wasm.min.mjs");
  const buffers = await loadFiles(site);
  $("status").textContent = "Starting onnxruntime…";
  ort.env.wasm.wasmPaths = new URL("vendor/", location.href).href;
  ort.env.wasm.wasmBinary = buffers["vendor/ort-wasm-simd-threaded.wasm"];
  // Threads need a cross-origin-isolated page (COOP/COEP headers), which a plain static server
  // does not send; one thread everywhere else.
  ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  const sessions = {};
  for (const [role, path] of Object.entries(site.graphs)) {
    sessions[role] = await ort.InferenceSession.create(buffers[path], { executionProviders: ["wasm"] });
  }
  const table = (role) => new Pieces(JSON.parse(new TextDecoder().decode(buffers[site.tokenizers[role]])));
  const app = { site, ready: true, loadSeconds: (performance.now() - started) / 1000 };
  $("progress").hidden = true;
  $("status").textContent = `Loaded in ${app.loadSeconds.toFixed(1)} s (${megabytes(site.files.reduce((s, f) => s + f.bytes, 0))} MB, ${site.precision}, onnxruntime-web ${site.runtime.version}, ${ort.env.wasm.numThreads} thread${ort.env.wasm.numThreads > 1 ? "s" : ""})`;
  if (site.task === "translation") setUpTranslation(app, ort, sessions, table, buffers);
  else setUpGeneration(app, ort, sessions, table);
  window.seq2seq = app;
}

function setUpTranslation(app, ort, sessions, table, buffers) {
  const { site } = app;
  const source = table("src"), target = table("tgt");
  const shortlist = site.shortlist ? JSON.parse(new TextDecoder().decode(buffers[site.shortlist])) : null;
  const model = new Translation(ort, sessions, site.network, shortlist);
  const data = site.languages || {};
  $("model-info").textContent = `translation ${data.src_lang ?? "?"} → ${data.tgt_lang ?? "?"}`;
  $("beam").value = site.decoding.beam;
  if (shortlist) {
    $("shortlist-option").hidden = false;
    $("shortlist").checked = site.decoding.shortlist !== "false";
  }
  $("translation").hidden = false;
  const button = $("translate");
  button.disabled = false;
  app.translate = async (line, beam, useShortlist) => {
    const options = { ...site.decoding, beam, nbest: 1 };
    const [best] = await model.translate(source.encode(line), options, useShortlist);
    return best ? target.decode(best.tokens) : "";
  };
  button.addEventListener("click", async () => {
    $("error").textContent = "";
    button.disabled = true;
    const list = $("translations");
    list.replaceChildren();
    const lines = $("source").value.split("\n").filter((l) => l.trim());
    const beam = Math.max(1, parseInt($("beam").value, 10) || 1);
    const begin = performance.now();
    try {
      for (const line of lines) {
        const item = document.createElement("li");
        item.textContent = await app.translate(line, beam, Boolean(shortlist) && $("shortlist").checked);
        list.append(item);
        await letThePagePaint();
      }
      const seconds = (performance.now() - begin) / 1000;
      app.lastSeconds = seconds;
      $("translation-timing").textContent =
        `${lines.length} sentence${lines.length === 1 ? "" : "s"} in ${seconds.toFixed(2)} s (beam ${beam})`;
    } catch (error) {
      showError(error);
    } finally {
      button.disabled = false;
    }
  });
}

function setUpGeneration(app, ort, sessions, table) {
  const text = table("text");
  const model = new LanguageModel(ort, sessions.lm_step, app.site.network);
  $("model-info").textContent = "character language model";
  $("language_model").hidden = false;
  const generate = $("generate"), stop = $("stop");
  generate.disabled = false;
  let stopping = false;
  stop.addEventListener("click", () => { stopping = true; });
  generate.addEventListener("click", async () => {
    $("error").textContent = "";
    const output = $("generated");
    const prompt = $("prompt").value;
    output.textContent = prompt;
    generate.disabled = true;
    stop.disabled = false;
    stopping = false;
    try {
      const ids = text.encode(prompt);
      const options = { maxChars: Math.max(1, parseInt($("max-chars").value, 10) || 1),
                        temperature: parseFloat($("temperature").value) || 1, greedy: $("greedy").checked };
      // An empty prompt reads as the start of a line, as the Python runtime does.
      for await (const id of model.generate(ids.length ? ids : text.encode("\n"), options)) {
        output.textContent += text.texts[id];
        await letThePagePaint();
        if (stopping) break;
      }
    } catch (error) {
      showError(error);
    } finally {
      generate.disabled = false;
      stop.disabled = true;
    }
  });
}

start().catch(showError);
