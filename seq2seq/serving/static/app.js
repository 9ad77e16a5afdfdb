// The page's only script: lists the models, shows the panel of the chosen model's task and
// calls the JSON API. Plain JavaScript, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
let models = [];
let streaming = null; // AbortController of the running generation
// A server started with an API key answers 401 without it: the page asks once and keeps the key
// for this tab only (sessionStorage), never in the address or a cookie.
let apiKey = sessionStorage.getItem("seq2seq-api-key") || "";

function showError(message) { $("error").textContent = message || ""; }

function headers(extra = {}) {
  return apiKey ? { ...extra, Authorization: `Bearer ${apiKey}` } : extra;
}

function askForKey(message) {
  $("key-form").hidden = false;
  $("api-key").focus();
  showError(message);
}

async function postJSON(path, body) {
  const response = await fetch(path, {
    method: "POST", headers: headers({ "Content-Type": "application/json" }), body: JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (response.status === 401) askForKey(data.error);
  if (!response.ok) throw new Error(data.field ? `${data.field}: ${data.error}` : data.error);
  return data;
}

function current() { return models.find((m) => m.name === $("model").value); }

function choose() {
  const model = current();
  for (const section of document.querySelectorAll("section.task")) {
    section.hidden = !model || section.id !== model.task;
  }
  showError("");
  if (!model) return;
  const parts = [model.task.replace("_", " ")];
  if (model.languages && model.languages.source) parts.push(`${model.languages.source} → ${model.languages.target}`);
  if (model.parameters) parts.push(`${model.parameters.toLocaleString("en")} parameters`);
  if (model.precision) parts.push(model.precision);
  $("model-info").textContent = parts.join(" · ");
}

async function loadModels() {
  const response = await fetch("/models", { headers: headers() });
  if (response.status === 401) {
    $("status").textContent = "";
    askForKey(apiKey ? "the API key was not accepted" : "");
    return;
  }
  $("key-form").hidden = true;
  models = (await response.json()).models;
  const select = $("model");
  select.replaceChildren(...models.map((m) => new Option(`${m.name} (${m.task.replace("_", " ")})`, m.name)));
  $("status").textContent = models.length ? "" : "No models are served.";
  choose();
}

// Attention as a table: one row per target piece, one column per source piece, darker = more weight.
function drawHeatmap(attention) {
  const table = document.createElement("table");
  const head = table.createTHead().insertRow();
  head.appendChild(document.createElement("th"));
  for (const piece of attention.source_pieces) {
    const th = document.createElement("th");
    th.textContent = piece;
    head.appendChild(th);
  }
  const body = table.createTBody();
  attention.weights.forEach((row, i) => {
    const tr = body.insertRow();
    const th = document.createElement("th");
    th.textContent = attention.target_pieces[i];
    tr.appendChild(th);
    row.forEach((weight) => {
      const cell = tr.insertCell();
      const shade = Math.round(255 * (1 - weight));
      cell.style.background = `rgb(${shade}, ${shade}, ${shade})`;
      cell.title = weight.toFixed(3);
    });
  });
  $("heatmap").replaceChildren(table);
}

async function translate() {
  showError("");
  $("translation-output").textContent = "…";
  $("heatmap").replaceChildren();
  try {
    const data = await postJSON("/translate", {
      model: current().name, text: [$("source").value], beam: Number($("beam").value), return_attention: true,
    });
    const result = data.translations[0];
    $("translation-output").textContent = result.text;
    if (result.attention) drawHeatmap(result.attention);
  } catch (error) {
    $("translation-output").textContent = "";
    showError(error.message);
  }
}

// POST /generate/stream answers with server-sent events; fetch reads them as they arrive.
async function generate() {
  showError("");
  const out = $("generated");
  out.textContent = "";
  out.dataset.chunks = "0";
  out.dataset.done = "false";
  streaming = new AbortController();
  $("generate").disabled = true;
  $("stop").disabled = false;
  try {
    const response = await fetch("/generate/stream", {
      method: "POST", headers: headers({ "Content-Type": "application/json" }), signal: streaming.signal,
      body: JSON.stringify({
        model: current().name, prompt: $("prompt").value,
        max_chars: Number($("max-chars").value), temperature: Number($("temperature").value),
      }),
    });
    if (!response.ok) {
      const data = await response.json().catch(() => ({ field: "", error: `HTTP ${response.status}` }));
      if (response.status === 401) askForKey(data.error);
      throw new Error(`${data.field}: ${data.error}`);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const kind = (event.match(/^event: (.*)$/m) || [null, "message"])[1];
        const data = JSON.parse((event.match(/^data: (.*)$/m) || [null, "{}"])[1]);
        if (kind === "message") {
          out.textContent += data.text;
          out.dataset.chunks = String(Number(out.dataset.chunks) + 1);
        } else if (kind === "error") {
          showError(data.error);
        }
      }
    }
  } catch (error) {
    if (error.name !== "AbortError") showError(error.message);
  } finally {
    out.dataset.done = "true";
    streaming = null;
    $("generate").disabled = false;
    $("stop").disabled = true;
  }
}

async function classify() {
  showError("");
  $("probabilities").replaceChildren();
  try {
    const data = await postJSON("/classify", { model: current().name, text: [$("classify-text").value] });
    const prediction = data.predictions[0];
    if (prediction.label === null) {
      $("label").textContent = "(nothing to classify)";
      return;
    }
    $("label").textContent = `${prediction.label} (${(100 * prediction.probability).toFixed(1)}%)`;
    $("probabilities").replaceChildren(...Object.entries(prediction.probabilities).map(([label, p]) => {
      const row = document.createElement("div");
      row.className = "bar";
      const name = document.createElement("span");
      name.textContent = label;
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.width = `${Math.round(300 * p)}px`;
      const number = document.createElement("span");
      number.textContent = p.toFixed(3);
      row.append(name, fill, number);
      return row;
    }));
  } catch (error) {
    $("label").textContent = "";
    showError(error.message);
  }
}

async function forecast() {
  showError("");
  // Commas separate weeks when there are any (an empty field is a missing week); else whitespace does.
  const text = $("values").value.trim();
  const fields = text.includes(",") ? text.split(",") : text.split(/\s+/);
  const values = fields.map((v) => v.trim()).map((v) => (v === "" ? null : Number(v)));
  const bad = fields.find((v, i) => values[i] !== null && !Number.isFinite(values[i]));
  if (bad !== undefined) {
    showError(`values: "${bad.trim()}" is not a number`);
    return;
  }
  try {
    const data = await postJSON("/forecast", {
      model: current().name, values, horizon: Number($("horizon").value),
    });
    $("forecast-output").textContent = data.forecast.map((v) => v.toFixed(2)).join(", ");
  } catch (error) {
    $("forecast-output").textContent = "";
    showError(error.message);
  }
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  apiKey = $("api-key").value.trim();
  sessionStorage.setItem("seq2seq-api-key", apiKey);
  showError("");
  loadModels().catch((error) => showError(`cannot list the models: ${error.message}`));
});
$("model").addEventListener("change", choose);
$("translate").addEventListener("click", translate);
$("generate").addEventListener("click", generate);
$("stop").addEventListener("click", () => streaming && streaming.abort());
$("classify").addEventListener("click", classify);
$("run-forecast").addEventListener("click", forecast);
loadModels().catch((error) => showError(`cannot list the models: ${error.message}`));
