// saedex web page: plain JS, no CDN, works offline. Talks to the /v1 API.
"use strict";
const $ = (s) => document.querySelector(s);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

// The key lives in this tab only (sessionStorage survives a reload, not the browser): never
// localStorage, which any later script on the origin could read for as long as the profile lives.
const KEY_SLOT = "saedex-key";
function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("#apikey").value || sessionStorage.getItem(KEY_SLOT) || "";
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}
async function api(path, body, method) {
  const opts = body === undefined ? { method: method || "GET", headers: headers() } : { method: "POST", headers: headers(), body: JSON.stringify(body) };
  const r = await fetch(path, opts);
  const data = await r.json().catch(() => ({}));
  if (!r.ok) {
    const d = data.detail;
    throw new Error(Array.isArray(d) ? d.map((e) => `${e.field}: ${e.message}`).join("; ") : d || r.statusText);
  }
  return data;
}
function showError(e) { const el = $("#error"); el.textContent = e ? String(e.message || e) : ""; el.classList.toggle("hidden", !e); }
const index = () => $("#index").value;

function parseWhere(s) {
  const out = {};
  for (const part of s.split(",").map((x) => x.trim()).filter(Boolean)) {
    const i = part.indexOf("=");
    if (i < 1) throw new Error(`filter "${part}": use key=value`);
    const v = part.slice(i + 1);
    out[part.slice(0, i).trim()] = /^-?\d+$/.test(v) ? parseInt(v, 10) : v;
  }
  return out;
}

function highlight(text, spans) {
  const sorted = [...spans].sort((a, b) => a[0] - b[0]);
  let html = "", pos = 0;
  for (const [s, e] of sorted) {
    if (s < pos) continue;
    html += esc(text.slice(pos, s)) + "<mark>" + esc(text.slice(s, e)) + "</mark>";
    pos = e;
  }
  return html + esc(text.slice(pos));
}
// quality: how well the label detects the latent on held-out text (null: not measured); low ones are faded
// family: "concept" latents (what a sentence says) are tinted apart from "token" ones (words, forms)
function chip(latent, label, extra, quality, family) {
  const q = quality === null || quality === undefined ? "" : ` · label quality ${Number(quality).toFixed(2)}`;
  const f = family ? ` · ${family} latent` : "";
  const cls = "chip" + (quality !== null && quality !== undefined && quality < 0.7 ? " unreliable" : "") + (family === "concept" ? " concept" : "");
  return `<span class="${cls}" data-latent="${latent}" title="latent ${latent}${f}${q}">${esc(label)}${extra ? " · " + esc(extra) : ""}</span>`;
}

// Results shown so far (all pages), for the CSV/JSON export.
let shown = { query: null, results: [], next: null, body: null };
// a document's payload fields (outcome, author...): what a reader checks a result against
const BOOKKEEPING = new Set(["n_tokens", "truncated", "content_hash", "prompt_tokens", "has_prompt"]);
function fieldsLine(fields) {
  const kv = Object.entries(fields || {}).filter(([k]) => !BOOKKEEPING.has(k)).slice(0, 8);
  return kv.length ? `<span class="fields">${kv.map(([k, v]) => `<span class="field">${esc(k)}=${esc(typeof v === "object" ? JSON.stringify(v) : v)}</span>`).join(" ")}</span>` : "";
}
// a text with the spans that point into it marked (cut at 1,500 characters)
const marked = (text, spans) => highlight(text.slice(0, 1500), spans.filter((s) => s[1] <= 1500));
function renderResult(r, i) {
  const spans = r.explanation.flatMap((e) => e.spans);
  const onPrompt = r.view === "prompt";  // the explanation's spans point into the prompt
  // a two-view record shows its prompt above its response; the view ranked carries the marks
  const prompt = r.prompt === undefined ? "" :
    `<div class="text prompt"><span class="muted">prompt:</span> ${onPrompt ? marked(r.prompt, spans) : esc(r.prompt.slice(0, 1500))}</div>`;
  const label = r.prompt === undefined ? "" : `<span class="muted">response:</span> `;
  return `<div class="result" data-id="${esc(r.id)}">
    <div class="meta">#${i + 1} · score ${r.score.toFixed(3)}${r.length_baseline === undefined ? "" : ` (its length's ${r.length_baseline.toFixed(3)} subtracted)`} · ${esc(r.dataset)} · ${esc(r.id)} ${fieldsLine(r.fields)}</div>
    ${prompt}<div class="text">${label}${onPrompt ? esc(r.text.slice(0, 1500)) : marked(r.text, spans)}</div>
    <div class="chips">${r.explanation.map((e) => chip(e.latent, e.label, "act " + e.activation.toFixed(1), e.quality, e.family)).join("")}${
      (r.against || []).length ? ` <span class="muted against">against:</span> ` + r.against.map((e) => chip(e.latent, e.label, "act " + e.activation.toFixed(1), e.quality, e.family)).join("") : ""}</div>
  </div>`;
}
async function doSearch(ev, more) {
  ev && ev.preventDefault();
  showError(null);
  try {
    const body = more ? { ...shown.body, offset: shown.next }
      : { query: $("#q").value, k: parseInt($("#k").value, 10) || 10, method: $("#method").value, where: parseWhere($("#where").value),
          ...($("#view").value === "prompt" ? { view: "prompt" } : {}),
          ...($("#length-neutral").checked ? { length_neutral: true } : {}) };
    const out = await api(`/v1/indexes/${index()}/search`, body);
    if (!more) {
      shown = { query: body.query, results: [], next: null, body };
      $("#query-latents").innerHTML = (out.latents || []).slice(0, 12).map((l) => chip(l.latent, l.label, l.weight.toFixed(2), null, l.family)).join("");
      $("#results").innerHTML = "";
    }
    const start = shown.results.length;
    shown.results.push(...out.results);
    shown.next = out.next_offset;
    $("#results").insertAdjacentHTML("beforeend", out.results.map((r, i) => renderResult(r, start + i)).join(""));
    if (!shown.results.length) $("#results").innerHTML = "<p>No results.</p>";
    $("#more").classList.toggle("hidden", shown.next === null || shown.next === undefined);
    $("#export").classList.toggle("hidden", !shown.results.length);
  } catch (e) { showError(e); }
}

function download(name, type, text) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], { type }));
  a.download = name;
  document.body.appendChild(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 0);
}
const csvCell = (v) => {
  if (typeof v === "number") return String(v);
  let s = String(v ?? "");
  // no formula injection when opened in a spreadsheet: leading blanks, tabs or line breaks before = + - @ count too
  if (/^[\s\u00a0\ufeff]*[=+\-@\uff1d\uff0b\uff0d\uff20]/.test(s) || /^[\t\r\n]/.test(s)) s = "'" + s;
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
};
function resultsCsv() {
  const rows = [["rank", "id", "score", "dataset", "why (latent labels)", "text"]];
  shown.results.forEach((r, i) => rows.push([i + 1, r.id, r.score, r.dataset, r.explanation.map((e) => e.label).join(" | "), r.text]));
  return rows.map((row) => row.map(csvCell).join(",")).join("\r\n") + "\r\n";
}
function exportResults(kind) {
  const base = `saedex-${index()}-${(shown.query || "search").replace(/[^A-Za-z0-9]+/g, "-").slice(0, 40)}`;
  if (kind === "csv") download(base + ".csv", "text/csv", resultsCsv());
  else download(base + ".json", "application/json", JSON.stringify({ index: index(), request: shown.body, results: shown.results }, null, 2));
}

async function openLatent(id) {
  showError(null);
  try {
    const l = await api(`/v1/indexes/${index()}/latents/${id}`);
    $("#latent-page").innerHTML = `<h2>latent ${l.id}: ${esc(l.label)}</h2>
      <p>${esc(l.description)}</p>
      <p class="muted">in ${(100 * l.doc_freq).toFixed(2)}% of documents (${l.doc_count}); p90 activation ${(l.quantiles.p90 || 0).toFixed(2)}; label: ${esc(l.label_source)}, ${esc(l.kind || "lexical")}${l.quality === null || l.quality === undefined ? "" : ", quality " + Number(l.quality).toFixed(2)}</p>
      <h3>Top activating examples</h3>
      ${l.examples.map((e) => `<div class="example">${e.span ? highlight(e.text, [e.span]) : esc(e.text)} <span class="muted">(${e.activation}, ${esc(e.doc_id)})</span></div>`).join("")}
      <h3>Non-activating examples</h3>
      ${(l.negatives || []).map((e) => `<div class="example">${esc(e.text)}</div>`).join("")}`;
    switchView("latent");
  } catch (e) { showError(e); }
}

// Analyses are jobs: submit, then poll until done (the server never holds a request for minutes).
let currentJob = null;
async function runJob(path, body, status) {
  let job = await api(path + "?wait=2", body);
  currentJob = job.id;
  $("#cancel-job").classList.remove("hidden");
  try {
    while (job.status === "queued" || job.status === "running") {
      status.textContent = `job ${job.id.slice(0, 8)}: ${job.status}${job.progress != null ? " " + Math.round(100 * job.progress) + "%" : ""}`;
      job = await api(`/v1/jobs/${job.id}?wait=5`);
    }
  } finally { $("#cancel-job").classList.add("hidden"); currentJob = null; }
  status.textContent = `job ${job.id.slice(0, 8)}: ${job.status}`;
  if (job.status === "failed") throw new Error(job.error ? job.error.detail : "job failed");
  if (job.status !== "done") throw new Error(`job ${job.status}`);
  return job.result;
}
// one group of latents (same label or same fired text): bars, count, and its best example
function diffGroup(g, max) {
  const ex = g.example;
  const snippet = ex ? `<div class="example">${ex.mark ? highlight(ex.text, [ex.mark]) : esc(ex.text)}
      <span class="muted">${esc(ex.doc_id)}</span> ${fieldsLine(ex.fields)}</div>` : "";
  const d = g.diff_length_matched ?? g.diff;
  return `<div class="bar-row"><span>${chip(g.latents[0], g.label, g.count > 1 ? "×" + g.count : null, g.quality)}
      <span class="muted">${(100 * g.freq_a).toFixed(1)}% vs ${(100 * g.freq_b).toFixed(1)}% · ${d >= 0 ? "+" : ""}${d.toFixed(3)} · p=${g.p_adj.toExponential(1)}${g.length_driven ? " · length-driven" : ""}</span></span>
    <span><div class="bar a" style="width:${(100 * g.freq_a / max).toFixed(1)}%"></div><div class="bar b" style="width:${(100 * g.freq_b / max).toFixed(1)}%"></div></span>
    ${snippet}</div>`;
}
async function doDiff(ev) {
  ev && ev.preventDefault();
  showError(null);
  try {
    const out = await runJob(`/v1/indexes/${index()}/diff`, { a: parseWhere($("#diff-a").value), b: parseWhere($("#diff-b").value), top: 30 }, $("#job-status"));
    const groups = out.groups || { a: [], b: [] };
    const max = Math.max(0.001, ...[...groups.a, ...groups.b].flatMap((g) => [g.freq_a, g.freq_b]));
    const side = (name, gs) => `<h3>More in ${name}</h3>` + (gs.length ? gs.map((g) => diffGroup(g, max)).join("") : "<p class=muted>none among the latents reported</p>");
    $("#diff-chart").innerHTML = `<p class="summary">${esc(out.summary || "")}</p>
      <p class="muted">A (blue): ${out.n_a} docs · B (orange): ${out.n_b} docs</p>` + side("A", groups.a) + side("B", groups.b);
  } catch (e) { showError(e); }
}

async function doLatents(ev) {
  ev && ev.preventDefault();
  showError(null);
  try {
    const q = $("#latent-q").value.trim();
    const out = await api(`/v1/indexes/${index()}/latents?top=50${q ? "&query=" + encodeURIComponent(q) : ""}`);
    $("#latent-list").innerHTML = out.latents.map((l) => `<div class="result">${chip(l.id, l.label, null, l.quality, l.family)} <span class="muted">${(100 * l.doc_freq).toFixed(2)}% of docs · ${esc(l.kind || "lexical")}</span>
      ${l.examples[0] && l.examples[0].span ? `<div class="example">${highlight(l.examples[0].text, [l.examples[0].span])}</div>` : ""}</div>`).join("");
  } catch (e) { showError(e); }
}

function switchView(name) {
  document.querySelectorAll(".view").forEach((v) => v.classList.toggle("hidden", v.id !== "view-" + name));
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.view === name));
}

async function init() {
  localStorage.removeItem(KEY_SLOT); // written by earlier versions of this page
  const saved = sessionStorage.getItem(KEY_SLOT);
  if (saved) $("#apikey").value = saved;
  $("#apikey").addEventListener("change", () => { sessionStorage.setItem(KEY_SLOT, $("#apikey").value); loadIndexes(); });
  $("#more").addEventListener("click", (ev) => doSearch(ev, true));
  $("#export-csv").addEventListener("click", () => exportResults("csv"));
  $("#export-json").addEventListener("click", () => exportResults("json"));
  $("#cancel-job").addEventListener("click", () => { if (currentJob) api(`/v1/jobs/${currentJob}`, undefined, "DELETE").catch(showError); });
  document.querySelectorAll(".tab").forEach((t) => t.addEventListener("click", () => switchView(t.dataset.view)));
  document.body.addEventListener("click", (ev) => { const c = ev.target.closest(".chip"); if (c) openLatent(c.dataset.latent); });
  $("#search-form").addEventListener("submit", doSearch);
  $("#diff-form").addEventListener("submit", doDiff);
  $("#latents-form").addEventListener("submit", doLatents);
  await loadIndexes();
}
async function loadIndexes() {
  try {
    const out = await api("/v1/indexes");
    const chosen = $("#index").value;  // a reload (the key changed) keeps the index chosen meanwhile
    $("#index").innerHTML = out.indexes.map((n) => `<option>${esc(n)}</option>`).join("");
    if (out.indexes.includes(chosen)) $("#index").value = chosen;
    showError(null);
  } catch (e) { showError(e); }
}
init();
