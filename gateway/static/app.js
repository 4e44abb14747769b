// The side-by-side page: one prompt, two models answering it next to each other (streamed live), and the judge's
// verdict underneath. Plain browser JavaScript, no build step and no libraries. It talks to the gateway's
// GET /chat/config, POST /chat/side-by-side (a server-sent event stream) and GET /reports/latest.
"use strict";

const KEY_STORE = "ucai.apiKey";        // localStorage: the key is entered once and kept across visits
const HISTORY_STORE = "ucai.history";   // sessionStorage: the history belongs to this tab's session only
const HISTORY_MAX = 50;                 // sessionStorage holds a few MB; old entries go first
const SIDES = ["left", "right"];        // side i answers with models[i]; the judge's "a" is the left answer

const $ = (id) => document.getElementById(id);

const state = {
  config: null,      // what GET /chat/config said
  keyRefused: false, // the last request was answered 401/403: a key must be entered before trying again
  shown: null,       // the history entry on screen (also the one being streamed)
  controller: null,  // the running stream's AbortController (null when idle)
};

// An error answer from the gateway, carrying its envelope {message, type, param, code}.
class ApiError extends Error {
  constructor(status, error) {
    super(error.message);
    this.status = status;
    this.error = error;
  }
}

// ---------------------------------------------------------------- the API key

function apiKey() {
  return localStorage.getItem(KEY_STORE) || "";
}

// Ask for the key in the dialog; `message` says why (e.g. the 401 envelope's message).
function askForKey(message) {
  $("key-message").textContent = message ||
    "Enter your UCAI API key. It stays in this browser (localStorage) and is sent with every request.";
  $("api-key").value = apiKey();
  const dialog = $("key-dialog");
  dialog.returnValue = "";  // Escape leaves the previous value otherwise
  if (!dialog.open) dialog.showModal();
  $("api-key").focus();
}

// The dialog's form uses method="dialog": the button pressed becomes the dialog's returnValue.
// Cancelling ("Continue without key", Escape) is for a gateway that needs no key; it does not retry a refusal.
function onKeyDialogClosed() {
  const saved = $("key-dialog").returnValue === "save";
  if (saved) {
    const key = $("api-key").value.trim();
    if (key) localStorage.setItem(KEY_STORE, key);
    else localStorage.removeItem(KEY_STORE);
    showKeyState();
  }
  if (!state.config && (saved || !state.keyRefused)) loadConfig();  // the first load waits for the key
}

function showKeyState() {
  $("key-button").textContent = apiKey() ? "API key ✓" : "API key (none)";
}

// ---------------------------------------------------------------- talking to the gateway

function authHeaders(extra = {}) {
  const key = apiKey();
  // No key: send no header at all rather than a malformed "Bearer ".
  return key ? { ...extra, Authorization: `Bearer ${key}` } : { ...extra };
}

// fetch with the key; a non-2xx answer becomes an ApiError, and 401/403 ask for the key again.
async function apiFetch(path, init = {}) {
  const response = await fetch(path, { ...init, headers: authHeaders(init.headers) });
  state.keyRefused = response.status === 401 || response.status === 403;
  if (response.ok) return response;
  const error = await readEnvelope(response);
  if (state.keyRefused) askForKey(error.message);
  throw new ApiError(response.status, error);
}

// Every gateway error is {"error": {message, type, param, code}}; anything else (say, a proxy's HTML error page)
// gets a generic message instead of a JSON parse error.
async function readEnvelope(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return body.error;
  } catch (_) { /* not JSON */ }
  return { message: `HTTP ${response.status} ${response.statusText}`.trim(), type: "http_error", param: null,
           code: null };
}

// ---------------------------------------------------------------- server-sent events over fetch

// EventSource can neither POST nor send an Authorization header, so the stream is read by hand: yields
// {event, data} for each event block (blocks end with a blank line; \r\n and \r count as line ends).
async function* readEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    // A trailing "\r" may be the first half of "\r\n": it waits for the next chunk.
    buffer = (buffer + value).replace(/\r\n|\r(?!$)/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const parsed = parseEvent(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (parsed) yield parsed;
    }
  }
  const last = parseEvent(buffer.replace(/\r$/, ""));  // a final block without its blank line
  if (last) yield last;
}

function parseEvent(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;  // ":" lines are comments (keep-alives)
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return null;
  return { event, data: JSON.parse(data.join("\n")) };
}

// ---------------------------------------------------------------- configuration

async function loadConfig() {
  setStatus("Loading the models…");
  try {
    const config = await (await apiFetch("/chat/config")).json();
    state.config = config;
    fillSelect($("left-model"), config.models, config.defaults && config.defaults.left);
    fillSelect($("right-model"), config.models, config.defaults && config.defaults.right);
    // "No judge" is an option of its own: the request then carries judge: null and no verdict comes.
    fillSelect($("judge-constitution"), ["", ...config.constitutions], config.judge && config.judge.constitution,
               (name) => name || "— no judge —");
    fillSelect($("judge-method"), config.methods, config.judge && config.judge.method);
    showReportLink(config.report);
    hideError();
    setStatus("");
    setPhase("idle");
  } catch (error) {
    showError(error);
    setStatus("");
  }
}

function fillSelect(select, values, chosen, label = (value) => value) {
  select.replaceChildren(...values.map((value) => new Option(label(value), value)));
  if (chosen !== undefined && chosen !== null && values.includes(chosen)) select.value = chosen;
}

function showReportLink(path) {
  const link = $("report-link");
  link.hidden = !path;
  if (path) link.href = path;
}

// A plain link cannot send the key, so the report is fetched with it and shown from a blob: URL. The tab is
// opened first, while the click still counts as a user action (popup blockers), and pointed at the blob after.
async function openReport(event) {
  event.preventDefault();
  const tab = window.open("", "_blank");
  try {
    const response = await apiFetch($("report-link").getAttribute("href"));
    const blob = new Blob([await response.text()], { type: response.headers.get("content-type") || "text/html" });
    const url = URL.createObjectURL(blob);
    if (tab) tab.location.href = url;
    else window.location.href = url;
    setTimeout(() => URL.revokeObjectURL(url), 60_000);  // the tab has loaded it by then
  } catch (error) {
    if (tab) tab.close();
    showError(error);
  }
}

// ---------------------------------------------------------------- asking

function newEntry(prompt, seed) {
  const judgeConstitution = $("judge-constitution").value;
  return {
    id: `${Date.now()}-${Math.random().toString(36).slice(2, 8)}`,
    at: new Date().toISOString(),
    prompt,
    seed,
    models: [$("left-model").value, $("right-model").value],
    judge: judgeConstitution ? { constitution: judgeConstitution, method: $("judge-method").value } : null,
    max_tokens: Number($("max-tokens").value) || 128,
    temperature: Number($("temperature").value),
    sides: {
      left: { model: $("left-model").value, text: "", final: null, error: null },
      right: { model: $("right-model").value, text: "", final: null, error: null },
    },
    verdict: null,
    error: null,
    done: false,
  };
}

function requestBody(entry) {
  return {
    messages: [{ role: "user", content: entry.prompt }],
    models: entry.models,
    judge: entry.judge,
    max_tokens: entry.max_tokens,
    temperature: entry.temperature,
    seed: entry.seed,
  };
}

async function ask(prompt, seed) {
  // Ctrl+Enter submits the form even while Send is disabled: only an idle, configured page asks.
  if (document.body.dataset.phase !== "idle" || !prompt.trim()) return;
  const entry = newEntry(prompt, seed);
  state.shown = entry;
  renderEntry(entry);
  const controller = new AbortController();
  state.controller = controller;
  setPhase("streaming");
  hideError();
  setStatus("Both models are answering…");
  try {
    const response = await apiFetch("/chat/side-by-side", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify(requestBody(entry)),
      signal: controller.signal,
    });
    for await (const { event, data } of readEvents(response)) handleEvent(entry, event, data);
    if (!entry.done && !entry.error) entry.error = { message: "the stream ended before it was done" };
  } catch (error) {
    entry.error = error.name === "AbortError" ? { message: "stopped" }
      : error instanceof ApiError ? error.error : { message: String(error.message || error) };
  } finally {
    state.controller = null;
    renderEntry(entry);  // the final, authoritative state (full texts, stats, verdict)
    if (entry.error) showError(entry.error);
    saveToHistory(entry);
    setStatus(entry.error ? "" : "Done.");
    setPhase("idle");
  }
}

function handleEvent(entry, event, data) {
  switch (event) {
    case "left":
    case "right":
      onSideEvent(entry, event, data);
      break;
    case "verdict":
      entry.verdict = data;
      renderVerdict(entry);
      break;
    case "error":
      onErrorEvent(entry, data);
      break;
    case "done":
      entry.done = true;
      break;
    default:
      break;  // an event this page does not know (a newer gateway): ignored
  }
}

function onSideEvent(entry, side, data) {
  const answer = entry.sides[side];
  if (data.model) answer.model = data.model;
  if (typeof data.delta === "string" && data.delta) {
    answer.text += data.delta;
    $(`${side}-output`).append(data.delta);  // a text node per delta: no re-rendering, no HTML parsing
  }
  if ("finish_reason" in data) {  // the side's last event: the full text and its timings
    answer.final = data;
    if (typeof data.text === "string") answer.text = data.text;
    renderSide(entry, side);
  }
}

function onErrorEvent(entry, data) {
  const error = data.error || { message: "unknown error" };
  if (data.side && entry.sides[data.side]) {
    entry.sides[data.side].error = error;  // one model failed; the other column goes on
    renderSide(entry, data.side);
  } else {
    entry.error = error;
    showError(error);
  }
}

// ---------------------------------------------------------------- rendering

function renderEntry(entry) {
  for (const side of SIDES) renderSide(entry, side);
  renderVerdict(entry);
  $("regenerate").disabled = !state.config || Boolean(state.controller);
}

function renderSide(entry, side) {
  const answer = entry.sides[side];
  const output = $(`${side}-output`);
  output.textContent = answer.text;
  output.classList.toggle("failed", Boolean(answer.error));
  if (answer.error) {
    const note = document.createElement("p");
    note.className = "side-error";
    note.textContent = `Error: ${answer.error.message}`;
    output.append(note);
  }
  // The pickers may have changed (or been swapped) since: say which model wrote what is shown.
  $(`${side}-shown-model`).textContent = `answered by ${answer.model} · seed ${entry.seed}`;
  $(`${side}-stats`).textContent = statsText(answer.final);
  $(`${side}-column`).classList.toggle("preferred", preferredSide(entry.verdict) === side);
}

function statsText(final) {
  if (!final) return "";
  const parts = [];
  if (typeof final.ttft_s === "number") parts.push(`first token ${final.ttft_s.toFixed(2)} s`);
  if (typeof final.tokens_per_s === "number") parts.push(`${final.tokens_per_s.toFixed(1)} tokens/s`);
  if (typeof final.completion_tokens === "number") parts.push(`${final.completion_tokens} tokens`);
  if (final.finish_reason) parts.push(`finish: ${final.finish_reason}`);
  return parts.join(" · ");
}

function renderVerdict(entry) {
  const body = $("verdict-body");
  const verdict = entry.verdict;
  if (!entry.judge) {
    body.replaceChildren(paragraph("No judge chosen for this prompt.", "muted"));
  } else if (!verdict) {
    const waiting = entry.done || entry.error ? "No verdict came." : "The judge reads both answers once they are in…";
    body.replaceChildren(paragraph(waiting, "muted"));
  } else {
    body.replaceChildren(...verdictNodes(verdict));
  }
  for (const side of SIDES) $(`${side}-column`).classList.toggle("preferred", preferredSide(verdict) === side);
}

// Identical answers get p = 0.5 each without asking the judge: "preferred: left" would be misleading then.
function isTie(verdict) {
  return typeof verdict.margin === "number" && verdict.margin < 1e-9;
}

function preferredSide(verdict) {
  return verdict && !isTie(verdict) ? verdict.preferred_side : null;
}

function verdictNodes(verdict) {
  const [pLeft, pRight] = verdict.probabilities || [0.5, 0.5];
  const judge = `${verdict.constitution} constitution, ${verdict.method} judge`;
  const nodes = [
    paragraph(isTie(verdict) ? `${judge}: a tie, no answer preferred.`
      : `${judge}: prefers the ${verdict.preferred_side} answer (${verdict.preferred_model}), ` +
        `margin ${fmt(verdict.margin)}.`, "verdict-headline"),
    probabilityBar(pLeft, pRight),
  ];
  const consistency = verdict.position_consistency;
  if (consistency && typeof consistency.score === "number") {
    nodes.push(paragraph(`Position consistency ${fmt(consistency.score)}` +
                         (consistency.note ? ` (${consistency.note})` : ""), "muted"));
  }
  if (verdict.note) nodes.push(paragraph(verdict.note, "muted"));
  const rows = principleScores(verdict.judgements);
  if (rows.length) nodes.push(principleTable(rows));
  return nodes;
}

// The judge asks one question per principle (in both orders for some methods): the table shows each principle's
// mean probability for the left (a) and right (b) answer.
function principleScores(judgements) {
  const groups = new Map();
  for (const j of judgements || []) {
    const group = groups.get(j.principle) || { principle: j.principle, a: 0, b: 0, n: 0 };
    group.a += j.p_a;
    group.b += j.p_b;
    group.n += 1;
    groups.set(j.principle, group);
  }
  return [...groups.values()].map((g) => ({ principle: g.principle, left: g.a / g.n, right: g.b / g.n, n: g.n }));
}

function principleTable(rows) {
  const table = document.createElement("table");
  table.id = "verdict-principles";
  table.createCaption().textContent = "Per principle (mean probability of being preferred)";
  const head = table.createTHead().insertRow();
  for (const [title, hint] of [["Principle", ""], ["Left", ""], ["Right", ""], ["n", "judgements averaged"]]) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = title;
    if (hint) th.title = hint;
    head.append(th);
  }
  const tbody = table.createTBody();
  for (const row of rows) {
    const tr = tbody.insertRow();
    tr.className = "principle-row";
    const name = document.createElement("th");
    name.scope = "row";
    name.textContent = row.principle;
    tr.append(name);
    for (const value of [fmt(row.left), fmt(row.right), String(row.n)]) tr.insertCell().textContent = value;
  }
  return table;
}

function probabilityBar(pLeft, pRight) {
  const bar = document.createElement("div");
  bar.className = "pbar";
  bar.setAttribute("role", "img");
  bar.setAttribute("aria-label", `left ${fmt(pLeft)}, right ${fmt(pRight)}`);
  for (const [side, p] of [["left", pLeft], ["right", pRight]]) {
    const part = document.createElement("span");
    part.className = `pbar-${side}`;
    part.style.flexGrow = String(Math.max(p, 0.001));
    part.textContent = `${side} ${fmt(p)}`;
    bar.append(part);
  }
  return bar;
}

function paragraph(text, className) {
  const p = document.createElement("p");
  p.textContent = text;
  if (className) p.className = className;
  return p;
}

const fmt = (x) => (typeof x === "number" ? x.toFixed(2) : "–");

// ---------------------------------------------------------------- history (sessionStorage)

function loadHistory() {
  try {
    return JSON.parse(sessionStorage.getItem(HISTORY_STORE)) || [];
  } catch (_) {
    return [];  // unreadable (edited by hand): start over rather than break the page
  }
}

function saveToHistory(entry) {
  const history = [entry, ...loadHistory().filter((e) => e.id !== entry.id)].slice(0, HISTORY_MAX);
  try {
    sessionStorage.setItem(HISTORY_STORE, JSON.stringify(history));
  } catch (_) {
    sessionStorage.setItem(HISTORY_STORE, JSON.stringify(history.slice(0, 5)));  // over quota: keep the newest
  }
  renderHistory();
}

function renderHistory() {
  const history = loadHistory();
  $("history-empty").hidden = history.length > 0;
  $("history").replaceChildren(...history.map(historyItem));
}

function historyItem(entry) {
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "history-item";
  if (state.shown && state.shown.id === entry.id) button.setAttribute("aria-current", "true");
  const prompt = document.createElement("span");
  prompt.className = "history-prompt";
  prompt.textContent = entry.prompt;
  const meta = document.createElement("span");
  meta.className = "history-meta";
  const winner = entry.verdict ? ` · judge: ${preferredSide(entry.verdict) || "tie"}` : "";
  const failed = entry.error ? ` · ${entry.error.message}` : "";
  meta.textContent = `${entry.models[0]} vs ${entry.models[1]} · seed ${entry.seed}${winner}${failed}`;
  button.append(prompt, meta);
  button.addEventListener("click", () => showEntry(entry));
  item.append(button);
  return item;
}

// Show an earlier entry as it was; the prompt box gets its prompt, so Send or Regenerate can ask it again.
function showEntry(entry) {
  if (state.controller) return;  // not while a stream writes into the columns
  state.shown = entry;
  $("prompt").value = entry.prompt;
  renderEntry(entry);
  renderHistory();
  hideError();
}

// ---------------------------------------------------------------- page state

function setPhase(phase) {
  // data-phase is what styles (and the browser test) key on: loading | idle | streaming.
  document.body.dataset.phase = phase;
  const busy = phase === "streaming";
  $("send").disabled = phase !== "idle";
  $("regenerate").disabled = phase !== "idle" || !state.shown;
  $("swap").disabled = busy;
  $("stop").hidden = !busy;
  for (const side of SIDES) $(`${side}-output`).setAttribute("aria-busy", String(busy));
}

function setStatus(text) {
  $("status").textContent = text;
}

function showError(error) {
  const box = $("error");
  const detail = error.error || error;  // an ApiError or an envelope
  box.textContent = detail.code ? `${detail.message} (${detail.code})` : detail.message;
  box.hidden = false;
}

function hideError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function swapModels() {
  const left = $("left-model").value;
  $("left-model").value = $("right-model").value;
  $("right-model").value = left;
}

function newSeed() {
  return crypto.getRandomValues(new Uint32Array(1))[0] & 0x7fffffff;
}

// ---------------------------------------------------------------- wiring

function main() {
  $("ask").addEventListener("submit", (event) => {
    event.preventDefault();
    ask($("prompt").value, Number($("seed").value) || 0);
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("ask").requestSubmit();
  });
  $("regenerate").addEventListener("click", () => state.shown && ask(state.shown.prompt, newSeed()));
  $("stop").addEventListener("click", () => state.controller && state.controller.abort());
  $("swap").addEventListener("click", swapModels);
  $("key-button").addEventListener("click", () => askForKey());
  $("key-dialog").addEventListener("close", onKeyDialogClosed);
  $("report-link").addEventListener("click", openReport);
  setPhase("loading");
  showKeyState();
  renderHistory();
  if (apiKey()) loadConfig();
  else askForKey();  // first visit: the key comes first; closing the dialog loads the models
}

document.addEventListener("DOMContentLoaded", main);
