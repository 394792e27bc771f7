// The page of `fakeprobe serve`: uploads each dropped file as a job, polls it, and draws its
// result. Plain JavaScript with no library, so the page works offline and has nothing to build.
// Every text from the server or a file name is set with textContent, never parsed as HTML.
"use strict";

const HISTORY_KEY = "fakeprobe-history";
const TOKEN_KEY = "fakeprobe-token";
const POLL_WAIT_S = 20;
const FAILURES = {
  no_face: "No face was found in the sampled frames, so there is nothing to score.",
  no_score: "No frame could be scored.",
  decode_error: "The file could not be decoded: it may be damaged or use an unsupported codec.",
  too_large: "The file is too large to be read.",
  empty: "The file is empty.",
  missing: "The file was lost before it could be read.",
};

const token = (() => {
  const fromUrl = new URLSearchParams(location.search).get("token");
  if (fromUrl) {
    sessionStorage.setItem(TOKEN_KEY, fromUrl);
    history.replaceState(null, "", location.pathname);  // keep it out of the address bar
  }
  return sessionStorage.getItem(TOKEN_KEY) || "";
})();

function withToken(url) {
  return token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url;
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token) headers["Authorization"] = "Bearer " + token;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const error = new Error((body && body.error) || response.status + " " + response.statusText);
    error.status = response.status;
    error.retryAfter = Number(response.headers.get("Retry-After") || 0);
    throw error;
  }
  return body;
}

function history_() {
  try { return JSON.parse(sessionStorage.getItem(HISTORY_KEY) || "[]"); } catch (e) { return []; }
}
function saveHistory(entries) { sessionStorage.setItem(HISTORY_KEY, JSON.stringify(entries)); }
function remember(entry) {
  const entries = history_().filter((e) => e.key !== entry.key);
  entries.push(entry);
  saveHistory(entries);
  drawHistory();
}

function drawHistory() {
  const list = document.getElementById("history");
  list.replaceChildren();
  for (const entry of history_()) {
    const li = document.createElement("li");
    const link = document.createElement("a");
    link.href = "#" + entry.key;
    link.textContent = entry.name;
    li.append(link);
    const tag = document.createElement("span");
    tag.className = "tag " + (entry.tag || "pending");
    tag.textContent = entry.tagText || "…";
    li.append(tag);
    list.append(li);
  }
}

function percent(p) { return (100 * p).toFixed(p >= 0.995 || p <= 0.005 ? 1 : 0) + "%"; }

function newCard(name, key) {
  const node = document.getElementById("item-template").content.firstElementChild.cloneNode(true);
  node.id = key;
  node.querySelector(".name").textContent = name;
  document.getElementById("items").prepend(node);
  return node;
}

function setState(card, text, progress) {
  card.querySelector(".state").textContent = text;
  const bar = card.querySelector(".progress");
  if (progress === null) { bar.hidden = true; return; }
  bar.hidden = false;
  if (progress === undefined) bar.removeAttribute("value"); else bar.value = progress;
}

function fail(card, message, entry) {
  setState(card, "failed", null);
  const p = card.querySelector(".message");
  p.textContent = message;
  p.className = "message error";
  if (entry) remember(Object.assign(entry, { tag: "failed", tagText: "failed" }));
}

function upload(file, model, card) {
  // XMLHttpRequest, not fetch: it reports upload progress
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append("file", file, file.name);
    if (model) form.append("model", model);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "api/jobs");
    if (token) xhr.setRequestHeader("Authorization", "Bearer " + token);
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) setState(card, "uploading", 100 * event.loaded / event.total);
    };
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
      if (xhr.status === 202) return resolve(body);
      const error = new Error((body && body.error) || "upload refused (" + xhr.status + ")");
      error.status = xhr.status;
      error.retryAfter = Number(xhr.getResponseHeader("Retry-After") || 0);
      reject(error);
    };
    xhr.onerror = () => reject(new Error("the server could not be reached"));
    xhr.send(form);
  });
}

async function submit(file) {
  const key = "item-" + Date.now() + "-" + Math.random().toString(36).slice(2, 8);
  const card = newCard(file.name, key);
  const entry = { key, name: file.name };
  remember(entry);
  const model = document.getElementById("model").value;
  let job = null;
  while (job === null) {
    try {
      job = await upload(file, model, card);
    } catch (error) {
      if (error.status === 503 && error.retryAfter) {  // queue full: wait and try again
        setState(card, "server busy, retrying", undefined);
        await new Promise((r) => setTimeout(r, 1000 * error.retryAfter));
        continue;
      }
      return fail(card, error.message, entry);
    }
  }
  entry.job = job.id;
  remember(entry);
  await follow(card, job, entry);
}

async function follow(card, job, entry) {
  while (job.state === "queued" || job.state === "running") {
    setState(card, job.state === "queued" ? "queued (" + job.position + " in line)" : "scoring…",
             undefined);
    try {
      job = await api("api/jobs/" + encodeURIComponent(job.id) + "?wait=" + POLL_WAIT_S);
    } catch (error) {
      return fail(card, error.message, entry);
    }
  }
  if (job.state === "failed") return fail(card, job.error, entry);
  show(card, job, entry);
}

function show(card, job, entry) {
  const result = job.result;
  const item = result.predictions[0];
  setState(card, "done in " + (job.finished - job.started).toFixed(1) + " s", null);
  const message = card.querySelector(".message");
  if (item.status !== "ok") {
    message.className = "message error";
    message.textContent = (FAILURES[item.status] || "The file could not be scored.")
      + (item.error && !FAILURES[item.status] ? " (" + item.error + ")" : "");
    remember(Object.assign(entry, { tag: "no_face", tagText: item.status.replace("_", " ") }));
    return;
  }
  message.textContent = item.error ? "Note: " + item.error : "";
  const box = card.querySelector(".result");
  box.hidden = false;
  box.querySelector(".probability .value").textContent = percent(item.score);
  const label = box.querySelector(".label");
  label.textContent = item.label;
  label.className = "label " + item.label;
  box.querySelector(".details").textContent =
    "Scored by " + result.model + " at its threshold of " + percent(result.threshold)
    + ", from " + item.frames_used + " face" + (item.frames_used === 1 ? "" : "s") + ".";
  drawTimeline(box.querySelector(".timeline"), item.timeline, job.extras, result.threshold);
  box.querySelector(".smooth-name").textContent =
    "smoothed (" + job.extras.smoothing.method + ")";
  const thumbs = box.querySelector(".thumbnails");
  thumbs.replaceChildren();
  for (const t of job.extras.thumbnails) {
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    img.src = withToken(t.url);
    img.alt = "face " + t.rank + ", fake probability " + percent(t.score);
    const caption = document.createElement("figcaption");
    caption.textContent = "#" + t.rank + " " + percent(t.score)
      + (Number.isFinite(t.time) ? " at " + t.time.toFixed(2) + " s" : "");
    figure.append(img, caption);
    thumbs.append(figure);
  }
  box.querySelector(".json").href = withToken(job.extras.json_url);
  box.querySelector(".csv").href = withToken(job.extras.csv_url);
  const button = box.querySelector(".heatmap-button");
  button.hidden = !job.extras.heatmap_url;
  button.onclick = () => {
    button.disabled = true;
    button.textContent = "computing the heatmap…";
    const figure = box.querySelector(".heatmap");
    const img = figure.querySelector("img");
    img.onload = () => { figure.hidden = false; button.hidden = true; };
    img.onerror = () => { button.textContent = "the heatmap could not be computed"; };
    img.src = withToken(job.extras.heatmap_url);
  };
  const warnings = box.querySelector(".warnings");
  warnings.replaceChildren();
  for (const w of result.warnings) {
    const li = document.createElement("li");
    li.textContent = w;
    warnings.append(li);
  }
  remember(Object.assign(entry, { tag: item.label, tagText: item.label + " " + percent(item.score) }));
}

function svg(name, attributes, text) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", name);
  for (const [k, v] of Object.entries(attributes)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function drawTimeline(target, timeline, extras, threshold) {
  // frame scores (thin line and dots) and the model's smoothing (thick line), per face track
  target.replaceChildren();
  // the drawing is as wide as the box it is shown in, so that text keeps its size
  const W = Math.max(320, Math.round(target.clientWidth || 640)), H = 200;
  const left = 44, right = 12, top = 10, bottom = 28;
  target.setAttribute("viewBox", "0 0 " + W + " " + H);
  const useTime = timeline.every((p) => Number.isFinite(p.time));
  const xs = timeline.map((p) => (useTime ? p.time : p.frame));
  const lo = Math.min(...xs), hi = Math.max(...xs);
  const x = (v) => left + (hi > lo ? (v - lo) / (hi - lo) : 0.5) * (W - left - right);
  const y = (p) => top + (1 - p) * (H - top - bottom);
  target.append(svg("line", { x1: left, x2: left, y1: top, y2: H - bottom, class: "axis" }));
  target.append(svg("line", { x1: left, x2: W - right, y1: H - bottom, y2: H - bottom, class: "axis" }));
  for (const v of [0, 0.5, 1]) {
    target.append(svg("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" },
                      Math.round(100 * v) + "%"));
  }
  target.append(svg("text", { x: (W + left) / 2, y: H - 6, "text-anchor": "middle" },
                    useTime ? "time (s): " + lo.toFixed(1) + " to " + hi.toFixed(1) : "frame"));
  target.append(svg("line", { x1: left, x2: W - right, y1: y(threshold), y2: y(threshold),
                              class: "threshold" }));
  const tracks = [...new Set(timeline.map((p) => p.track))];
  for (const track of tracks) {
    const members = timeline.map((p, k) => k).filter((k) => timeline[k].track === track);
    const path = (values) => members.map((k, n) =>
      (n ? "L" : "M") + x(xs[k]).toFixed(1) + " " + y(values[k]).toFixed(1)).join(" ");
    target.append(svg("path", { d: path(extras.smoothed), class: "smooth" }));
    target.append(svg("path", { d: path(timeline.map((p) => p.score)), class: "raw" }));
    for (const k of members) {
      target.append(svg("circle", { cx: x(xs[k]), cy: y(timeline[k].score), r: 2.5, class: "rawdot" }));
    }
  }
  target.setAttribute("aria-label", "fake probability of " + timeline.length + " frames over time");
}

async function restore() {
  // the session's earlier items, fetched again (a job the server has forgotten says so)
  for (const entry of history_()) {
    const card = newCard(entry.name, entry.key);
    if (!entry.job) { fail(card, "this upload did not finish"); continue; }
    try {
      const job = await api("api/jobs/" + encodeURIComponent(entry.job));
      follow(card, job, entry);
    } catch (error) {
      fail(card, error.status === 404 ? "the server no longer holds this result" : error.message);
    }
  }
}

async function start() {
  drawHistory();
  const chooser = document.getElementById("chooser");
  const drop = document.getElementById("drop");
  const take = (files) => { for (const file of files) submit(file); };
  chooser.addEventListener("change", () => { take(chooser.files); chooser.value = ""; });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    take(e.dataTransfer.files);
  });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter") chooser.click(); });
  document.getElementById("clear").addEventListener("click", () => {
    saveHistory([]);
    drawHistory();
    document.getElementById("items").replaceChildren();
  });
  try {
    const [health, models] = await Promise.all([api("api/health"), api("api/models")]);
    const select = document.getElementById("model");
    for (const m of models) {
      const option = document.createElement("option");
      option.value = m.name;
      option.textContent = m.name + (m.bundled ? " (bundled)" : "");
      option.selected = m.default;
      select.append(option);
    }
    document.getElementById("server").textContent =
      "fakeprobe " + health.version + ", " + health.queued + " waiting";
    document.getElementById("limits").textContent =
      "up to " + Math.round(health.limits.max_upload_bytes / 1048576) + " MB each";
  } catch (error) {
    document.getElementById("server").textContent = "server unreachable: " + error.message;
  }
  await restore();
}

document.addEventListener("DOMContentLoaded", start);
