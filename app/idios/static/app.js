// The Idios web page: search, add, compare, find duplicates and browse through the HTTP API of the server
// that serves it.
// Plain modules, no dependencies, no inline code (the page runs under a strict Content-Security-Policy).

const KEY_STORAGE = "idios.apiKey";
const MODEL_STORAGE = "idios.model";
const BULK_CHUNK = 25; // urls per add_bulk request (data-chunk on the form overrides it)
const DUP_PAGE = 100; // stored urls examined per duplicates request (data-page on the form overrides it)
const TABS = ["search", "add", "compare", "duplicates", "browse"];

const $ = (id) => document.getElementById(id);

const state = {
  models: [],
  model: null,
  searchToken: 0,
  queryObjectUrl: null,
  pendingRetry: null,
  bulkStop: false,
  browse: { cursors: [null], page: 0 },
  modelPoll: null,
  detailsUrl: null,
  hits: [],
  dup: { walk: 0, stop: false },
};

// ---------------------------------------------------------------- API calls

class ApiError extends Error {
  constructor(status, message, types = []) {
    super(message);
    this.status = status;
    this.types = types;
  }
}

function apiKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

/** The readable text of an error answer: each `detail[].msg`, with the field it is about. */
function errorText(status, statusText, body, raw) {
  const detail = body && typeof body === "object" ? body.detail : undefined;
  if (Array.isArray(detail) && detail.length) {
    const lines = detail.map((item) => {
      if (!item || typeof item !== "object") return String(item);
      const loc = Array.isArray(item.loc) ? item.loc.filter((part) => part !== "body" && part !== "query") : [];
      const where = loc.length ? `${loc.join(".")}: ` : "";
      return where + String(item.msg ?? item.type ?? "invalid");
    });
    return { message: lines.join("\n"), types: detail.map((item) => item && item.type).filter(Boolean) };
  }
  if (typeof detail === "string" && detail) return { message: detail, types: [] };
  const snippet = (raw || "").replace(/<[^>]*>/g, " ").replace(/\s+/g, " ").trim().slice(0, 200);
  const head = `The server answered ${status}${statusText ? ` ${statusText}` : ""}`;
  return { message: snippet ? `${head}: ${snippet}` : `${head}.`, types: [] };
}

/** Call the API: `json` for a JSON body, `form` for multipart. Answers the decoded JSON, or null for 204. */
async function api(path, { method = "GET", json, form } = {}) {
  const headers = { Accept: "application/json" };
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, cache: "no-store" });
  } catch (error) {
    throw new ApiError(0, `Cannot reach the Idios server (${error.message || "network error"}). Check that it is running.`);
  }
  if (response.status === 204) return null;
  const raw = await response.text();
  let parsed;
  try {
    parsed = raw ? JSON.parse(raw) : null;
  } catch {
    parsed = undefined;
  }
  if (!response.ok) {
    const { message, types } = errorText(response.status, response.statusText, parsed, raw);
    throw new ApiError(response.status, message, types);
  }
  if (parsed === undefined) throw new ApiError(response.status, "The server's answer is not JSON.");
  return parsed;
}

const modelPath = (op) => `models/${encodeURIComponent(state.model)}/${op}`;

// ---------------------------------------------------------------- messages

function showError(error) {
  const text = error instanceof ApiError || error instanceof Error ? error.message : String(error);
  $("alert-text").textContent = text || "Something went wrong.";
  $("alert").hidden = false;
  if (error instanceof ApiError && error.status === 401) askForKey();
}

function clearError() {
  $("alert").hidden = true;
  $("alert-text").textContent = "";
}

/** Run a user action: clear the last error, show this one's, remember it for a retry once a key is given. */
async function act(action) {
  clearError();
  try {
    await action();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) state.pendingRetry = action;
    showError(error);
  }
}

async function busy(button, work) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

// ---------------------------------------------------------------- API key

function askForKey() {
  const panel = $("key-panel");
  panel.hidden = false;
  $("key-toggle").setAttribute("aria-expanded", "true");
  $("key-reason").textContent = apiKey()
    ? "The server did not accept this API key: enter another one."
    : "This server needs an API key. It is kept in this tab's session storage only.";
  if (!state.models.length) $("model").options[0].textContent = "API key needed";
  $("api-key").focus();
}

function setupKey() {
  $("api-key").value = apiKey();
  $("key-toggle").addEventListener("click", () => {
    const panel = $("key-panel");
    panel.hidden = !panel.hidden;
    $("key-toggle").setAttribute("aria-expanded", String(!panel.hidden));
    if (!panel.hidden) $("api-key").focus();
  });
  $("key-panel").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    try {
      if (key) sessionStorage.setItem(KEY_STORAGE, key);
      else sessionStorage.removeItem(KEY_STORAGE);
    } catch {
      showError(new Error("This browser does not allow session storage; the key cannot be kept."));
      return;
    }
    $("key-panel").hidden = true;
    $("key-toggle").setAttribute("aria-expanded", "false");
    $("key-toggle").classList.toggle("has-key", Boolean(key));
    const retry = state.pendingRetry;
    state.pendingRetry = null;
    await act(async () => {
      await loadModels();
      if (retry && retry !== loadModelsAction) await retry();
    });
  });
  $("key-forget").addEventListener("click", () => {
    try {
      sessionStorage.removeItem(KEY_STORAGE);
    } catch {
      /* nothing kept */
    }
    $("api-key").value = "";
    $("key-toggle").classList.remove("has-key");
  });
  $("key-toggle").classList.toggle("has-key", Boolean(apiKey()));
  $("alert-close").addEventListener("click", clearError);
}

// ---------------------------------------------------------------- models

function remembered(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}

function currentModel() {
  return state.models.find((model) => model.name === state.model) || null;
}

async function loadModels() {
  const models = await api("models");
  state.models = models;
  const select = $("model");
  const saved = state.model || remembered(MODEL_STORAGE);
  select.replaceChildren();
  for (const model of models) {
    const option = document.createElement("option");
    option.value = model.name;
    const ready = model.status === "ready";
    option.disabled = !ready;
    option.textContent = ready ? model.name : `${model.name} — ${model.status}${model.reason ? `: ${model.reason}` : ""}`;
    option.title = model.description + (model.reason ? ` (${model.reason})` : "");
    select.append(option);
  }
  const usable = models.filter((model) => model.status === "ready");
  const chosen = usable.find((model) => model.name === saved) || usable[0];
  select.disabled = usable.length === 0;
  if (chosen) {
    select.value = chosen.name;
    setModel(chosen.name);
  } else {
    state.model = null;
    $("model-info").textContent = "No model is ready yet.";
    updateTextSearch();
  }
  clearTimeout(state.modelPoll);
  if (models.some((model) => model.status === "loading")) {
    // Poll until they are ready, without clearing a message the user may be reading.
    state.modelPoll = setTimeout(() => loadModels().catch(showError), 5000);
  }
}

const loadModelsAction = () => loadModels();

function setModel(name) {
  const changed = state.model !== name;
  state.model = name;
  try {
    localStorage.setItem(MODEL_STORAGE, name);
  } catch {
    /* not kept */
  }
  const model = currentModel();
  $("model-info").textContent = model
    ? `${model.dimension}${model.metric === "HAMMING" ? " bits" : "-d"}, ${model.metric.toLowerCase()}`
    : "";
  $("model-info").title = model ? model.description : "";
  updateTextSearch();
  if (changed) {
    clearResults("Search by image, URL or text to see similar images.");
    resetDuplicates();
    state.browse = { cursors: [null], page: 0 };
    if (!$("panel-browse").hidden) act(loadBrowse);
  }
}

function updateTextSearch() {
  const model = currentModel();
  const canText = Boolean(model && model.text);
  $("search-text").disabled = !canText;
  $("search-text-button").disabled = !canText;
  $("text-hint").textContent = model
    ? canText
      ? ""
      : `${model.name} has no text tower: search it by image or URL.`
    : "";
}

// ---------------------------------------------------------------- tabs

function showTab(name, { focus = false } = {}) {
  if (!TABS.includes(name)) name = "search";
  for (const tab of TABS) {
    const selected = tab === name;
    const button = $(`tab-${tab}`);
    button.setAttribute("aria-selected", String(selected));
    button.tabIndex = selected ? 0 : -1;
    $(`panel-${tab}`).hidden = !selected;
    if (selected && focus) button.focus();
  }
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  if (name === "browse" && state.model) act(loadBrowse);
}

function currentTab() {
  return TABS.find((tab) => !$(`panel-${tab}`).hidden) || "search";
}

function setupTabs() {
  for (const tab of TABS) {
    const button = $(`tab-${tab}`);
    button.addEventListener("click", () => showTab(tab));
    button.addEventListener("keydown", (event) => {
      const index = TABS.indexOf(tab);
      const moves = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: TABS.length - 1 };
      if (!(event.key in moves)) return;
      event.preventDefault();
      showTab(TABS[(moves[event.key] + TABS.length) % TABS.length], { focus: true });
    });
  }
  window.addEventListener("hashchange", () => showTab(location.hash.slice(1)));
}

// ---------------------------------------------------------------- search

const looksLikeUrl = (text) => /^https?:\/\/\S+$/i.test(text.trim());

function searchOptions() {
  const limitInput = $("limit");
  const limit = Math.round(Number(limitInput.value));
  if (!Number.isFinite(limit) || limit < 1 || limit > 1000) {
    limitInput.focus();
    throw new Error("The number of results must be between 1 and 1000.");
  }
  const filter = parseFilter();
  if (filter === undefined) {
    $("filter").focus();
    throw new Error($("filter-error").textContent);
  }
  return { limit, min_similarity: Number($("min-similarity").value), filter };
}

/**
 * The JSON object typed in the field `id`: null when empty, undefined when invalid, the reason
 * then shown in `${id}-error`. `what` names the field in messages ("The filter", "Metadata");
 * `check(value)` may return a further problem with a valid object.
 */
function jsonObjectField(id, what, notJson, check = () => "") {
  const input = $(id);
  const text = input.value.trim();
  let problem = "";
  let value = null;
  if (text) {
    try {
      value = JSON.parse(text);
      if (!value || typeof value !== "object" || Array.isArray(value)) {
        problem = `${what} must be a JSON object, e.g. {"tags": "cat"}.`;
      } else {
        problem = check(value);
      }
    } catch (error) {
      problem = `${notJson}: ${error.message}`;
    }
  }
  $(`${id}-error`).textContent = problem;
  $(`${id}-error`).hidden = !problem;
  input.setAttribute("aria-invalid", String(Boolean(problem)));
  return problem ? undefined : value;
}

/** The metadata filter: null when empty, undefined when invalid (the error is shown under the field). */
function parseFilter() {
  return jsonObjectField("filter", "The filter", "The filter is not valid JSON", (value) =>
    Object.values(value).some((v) => v === null || typeof v === "object")
      ? "Filter values must be strings, numbers or booleans."
      : "",
  );
}

function clearResults(message) {
  state.hits = [];
  $("results").replaceChildren();
  $("results-status").textContent = message;
  showQueryBox(-1);
}

function showQueryPreview(src) {
  const preview = $("query-preview");
  showQueryBox(-1);
  if (state.queryObjectUrl && state.queryObjectUrl !== src) {
    URL.revokeObjectURL(state.queryObjectUrl);
    state.queryObjectUrl = null;
  }
  if (src) {
    preview.src = src;
    preview.hidden = false;
    $("dropzone").classList.add("has-preview");
  } else {
    preview.removeAttribute("src");
    preview.hidden = true;
    $("dropzone").classList.remove("has-preview");
  }
}

/** Search by `{file}`, `{url}` or `{text}`; the newest search wins when several overlap. */
async function search(query) {
  if (!state.model) throw new Error("No model is ready: wait until one is, or check the server.");
  const options = searchOptions();
  // A text has no mirror: flip applies to image queries only.
  const flip = $("flip").checked && !query.text;
  const token = ++state.searchToken;
  let described;
  let request;
  if (query.file) {
    state.queryObjectUrl = URL.createObjectURL(query.file);
    showQueryPreview(state.queryObjectUrl);
    const form = new FormData();
    form.append("file", query.file, query.file.name || "pasted-image");
    form.append("limit", String(options.limit));
    form.append("min_similarity", String(options.min_similarity));
    if (options.filter) form.append("filter", JSON.stringify(options.filter));
    if (flip) form.append("flip", "true");
    described = query.file.name ? `“${query.file.name}”` : "the pasted image";
    request = () => api(modelPath("search/upload"), { method: "POST", form });
  } else if (query.url) {
    showQueryPreview(looksLikeUrl(query.url) ? query.url : null);
    $("search-url").value = query.url;
    described = "the image at this URL";
    const body = { url: query.url, ...options, ...(flip ? { flip: true } : {}) };
    request = () => api(modelPath("search"), { method: "POST", json: body });
  } else {
    showQueryPreview(null);
    described = `“${query.text}”`;
    request = () => api(modelPath("search"), { method: "POST", json: { text: query.text, ...options } });
  }
  if (flip) described += " and its mirror";
  $("results-status").textContent = `Searching ${state.model} for images like ${described}…`;
  $("panel-search").setAttribute("aria-busy", "true");
  try {
    const hits = await request();
    if (token !== state.searchToken) return;
    renderResults(hits, described, options);
  } catch (error) {
    if (token === state.searchToken) clearResults("The search failed.");
    throw error;
  } finally {
    if (token === state.searchToken) $("panel-search").removeAttribute("aria-busy");
  }
}

function scoreClass(similarity) {
  if (similarity >= 95) return "s-top";
  if (similarity >= 80) return "s-high";
  if (similarity >= 60) return "s-mid";
  return "s-low";
}

function shortName(url) {
  try {
    const parsed = new URL(url);
    const last = parsed.pathname.split("/").filter(Boolean).pop() || parsed.host;
    return decodeURIComponent(last) + parsed.search;
  } catch {
    return url;
  }
}

/** An <img> for a stored url: loaded lazily, replaced by a placeholder when it cannot be loaded. */
function thumbnail(img, url) {
  img.addEventListener("error", () => {
    img.removeAttribute("src");
    img.closest(".thumb, .url-row, .frame")?.classList.add("broken");
  });
  img.src = url;
}

// ---------------------------------------------------------------- match boxes

// An <img> that can show where it matches another image gets a layer beside it, laid over the picture
// as displayed (object-fit letterboxes or crops it within the element), with the box inside the layer
// in fractions of the picture; the layer follows the image when the layout changes.
const boxLayers = new WeakMap();
const boxObserver = new ResizeObserver((entries) => {
  for (const { target } of entries) {
    const images = target instanceof HTMLImageElement ? [target] : target.querySelectorAll("img");
    for (const img of images) if (boxLayers.has(img)) placeLayer(img);
  }
});

/** Where an <img> shows its picture, in pixels of its offset parent (object-fit centred, the default position). */
function pictureRect(img) {
  const [width, height] = [img.clientWidth, img.clientHeight];
  const [natural, naturalHeight] = [img.naturalWidth, img.naturalHeight];
  if (!width || !height || !natural || !naturalHeight) return null;
  const fit = getComputedStyle(img).objectFit;
  const scales = {
    contain: Math.min(width / natural, height / naturalHeight),
    cover: Math.max(width / natural, height / naturalHeight),
    "scale-down": Math.min(1, width / natural, height / naturalHeight),
    none: 1,
  };
  const shown = fit in scales ? [natural * scales[fit], naturalHeight * scales[fit]] : [width, height];
  return {
    left: img.offsetLeft + img.clientLeft + (width - shown[0]) / 2,
    top: img.offsetTop + img.clientTop + (height - shown[1]) / 2,
    width: shown[0],
    height: shown[1],
  };
}

function placeLayer(img) {
  const layer = boxLayers.get(img);
  const rect = layer.dataset.box && !img.hidden && img.getAttribute("src") ? pictureRect(img) : null;
  layer.hidden = !rect;
  if (!rect) return;
  layer.style.left = `${rect.left}px`;
  layer.style.top = `${rect.top}px`;
  layer.style.width = `${rect.width}px`;
  layer.style.height = `${rect.height}px`;
}

/** Outline `box` ([x0, y0, x1, y1], fractions of the picture's width and height) over `img`; null removes it. */
function showBox(img, box) {
  let layer = boxLayers.get(img);
  if (!layer) {
    if (!box) return;
    layer = document.createElement("span");
    layer.className = "match-layer";
    layer.hidden = true;
    layer.append(Object.assign(document.createElement("span"), { className: "match-box" }));
    img.after(layer);
    boxLayers.set(img, layer);
    img.addEventListener("load", () => placeLayer(img));
    boxObserver.observe(img);
    boxObserver.observe(img.parentElement);
  }
  const outline = layer.firstElementChild;
  if (box) {
    const [x0, y0, x1, y1] = box.map((value) => Math.min(1, Math.max(0, Number(value) || 0)));
    outline.style.left = `${x0 * 100}%`;
    outline.style.top = `${y0 * 100}%`;
    outline.style.width = `${Math.max(0, x1 - x0) * 100}%`;
    outline.style.height = `${Math.max(0, y1 - y0) * 100}%`;
    layer.dataset.box = "1";
  } else {
    delete layer.dataset.box;
  }
  placeLayer(img);
  // Text changed with the box (a caption) can move the image without resizing it or its container.
  requestAnimationFrame(() => placeLayer(img));
}

function percent(share) {
  const value = Math.round(Number(share) * 100);
  return value === 0 && share > 0 ? "under 1%" : `${value}%`;
}

const corners = (match) => (match.inliers === 1 ? "1 corner agrees" : `${match.inliers} corners agree`);

/** A search hit's match in words: "matches 97% of this image, 42% of the query; 57 corners agree". */
function matchText(match) {
  const shares = `${percent(match.target_overlap)} of this image, ${percent(match.query_overlap)} of the query`;
  return `matches ${shares}; ${corners(match)}`;
}

/** Outline on the query preview the part that matches result `index` (-1: none), and mark that result. */
function showQueryBox(index) {
  const hit = state.hits[index];
  const preview = $("query-preview");
  const box = hit && hit.match && !preview.hidden ? hit.match.query_box : null;
  [...$("results").children].forEach((item, i) => item.classList.toggle("boxed", Boolean(box) && i === index));
  $("query-match").textContent = box ? `Outlined: the part that matches result ${index + 1}` : "";
  $("query-match").hidden = !box;
  showBox(preview, box);
}

function renderResults(hits, described, options) {
  const list = $("results");
  list.replaceChildren();
  state.hits = hits;
  const template = $("result-template");
  hits.forEach((hit, index) => {
    const item = template.content.firstElementChild.cloneNode(true);
    item.dataset.url = hit.url;
    item.dataset.similarity = String(hit.similarity);
    const img = item.querySelector("img");
    img.alt = `Result ${index + 1}: ${shortName(hit.url)}`;
    thumbnail(img, hit.url);
    const badge = item.querySelector(".badge");
    badge.textContent = hit.similarity.toFixed(1);
    badge.classList.add(scoreClass(hit.similarity));
    badge.title = "Similarity, 0 to 100";
    const name = item.querySelector(".name");
    name.textContent = shortName(hit.url);
    name.title = hit.url;
    const thumb = item.querySelector(".thumb");
    item.querySelector(".flag").hidden = !hit.flipped;
    const mirrored = hit.flipped ? ", mirrored" : "";
    const label = `Result ${index + 1}, similarity ${hit.similarity.toFixed(1)}${mirrored}: details`;
    thumb.setAttribute("aria-label", label);
    thumb.addEventListener("click", () => openDetails(hit));
    if (hit.match) {
      // The whole picture, not a square crop of it, so that the box shows where the query lies in it.
      thumb.classList.add("fit");
      showBox(img, hit.match.target_box);
      const text = item.querySelector(".match-text");
      text.textContent = matchText(hit.match);
      text.hidden = false;
      for (const type of ["focus", "mouseenter"]) thumb.addEventListener(type, () => showQueryBox(index));
    }
    item.querySelector(".again").addEventListener("click", () => act(() => search({ url: hit.url })));
    list.append(item);
  });
  showQueryBox(hits.findIndex((hit) => hit.match));
  const floor = options.min_similarity > 0 ? ` at least ${options.min_similarity} similar` : "";
  $("results-status").textContent = hits.length
    ? `${hits.length} result${hits.length === 1 ? "" : "s"}${floor} for ${described} in ${state.model}, best first.`
    : `No stored image${floor} matches ${described} in ${state.model}.`;
}

const metadataText = (metadata) =>
  metadata && Object.keys(metadata).length ? JSON.stringify(metadata, null, 2) : "No metadata.";

/**
 * The dialog of a stored image: `hit` is a search hit, or {url, similarity} where the metadata is not
 * known yet (a duplicate), then read from a search by the url. `score` replaces the similarity line.
 */
function openDetails(hit, { score } = {}) {
  const dialog = $("details");
  const img = $("details-img");
  img.classList.remove("broken");
  img.src = hit.url;
  $("details-title").textContent = shortName(hit.url);
  $("details-score").textContent = score || `Similarity ${hit.similarity.toFixed(2)} / 100`;
  $("details-mirrored").hidden = !hit.flipped;
  const match = $("details-match");
  const text = hit.match ? matchText(hit.match) : "";
  match.textContent = text && `${text[0].toUpperCase()}${text.slice(1)}. The outline shows where.`;
  match.hidden = !hit.match;
  showBox(img, hit.match ? hit.match.target_box : null);
  const link = $("details-url");
  link.href = hit.url;
  link.textContent = hit.url;
  state.detailsUrl = hit.url;
  if (hit.metadata === undefined) storedMetadata(hit.url);
  else $("details-metadata").textContent = metadataText(hit.metadata);
  dialog.showModal();
}

/** The metadata of a stored url, shown in the open dialog: the API answers it with search hits only. */
async function storedMetadata(url) {
  const pre = $("details-metadata");
  pre.textContent = "Loading…";
  try {
    const hits = await api(modelPath("search"), { method: "POST", json: { url, limit: 10 } });
    if (state.detailsUrl !== url) return;
    const own = hits.find((hit) => hit.url === url);
    pre.textContent = own ? metadataText(own.metadata) : "Not found: the image may have been removed.";
  } catch (error) {
    if (state.detailsUrl === url) pre.textContent = `Cannot read the metadata: ${error.message}`;
  }
}

function setupDetails() {
  const img = $("details-img");
  img.addEventListener("error", () => img.classList.add("broken"));
  $("details-search").addEventListener("click", () => {
    $("details").close();
    const url = state.detailsUrl;
    if (currentTab() !== "search") showTab("search");
    act(() => search({ url }));
  });
}

function imageFrom(items) {
  for (const item of items || []) {
    if (item.kind === "file" && item.type.startsWith("image/")) return item.getAsFile();
  }
  return null;
}

function setupSearch() {
  const dropzone = $("dropzone");
  const fileInput = $("search-file");
  dropzone.addEventListener("click", () => fileInput.click());
  dropzone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      fileInput.click();
    }
  });
  fileInput.addEventListener("change", () => {
    const file = fileInput.files && fileInput.files[0];
    if (file) act(() => search({ file }));
    fileInput.value = "";
  });
  for (const type of ["dragenter", "dragover"]) {
    dropzone.addEventListener(type, (event) => {
      event.preventDefault();
      dropzone.classList.add("dragging");
    });
  }
  dropzone.addEventListener("dragleave", () => dropzone.classList.remove("dragging"));
  dropzone.addEventListener("drop", (event) => {
    event.preventDefault();
    dropzone.classList.remove("dragging");
    const data = event.dataTransfer;
    const file = data && [...(data.files || [])].find((f) => f.type.startsWith("image/"));
    if (file) {
      act(() => search({ file }));
      return;
    }
    const text = data ? (data.getData("text/uri-list") || data.getData("text/plain") || "").split("\n")[0].trim() : "";
    if (looksLikeUrl(text)) act(() => search({ url: text }));
    else showError(new Error("Drop an image file, or an image dragged from another page."));
  });
  // Files dropped next to the zone would replace the page: ignore them.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());

  document.addEventListener("paste", (event) => {
    if (currentTab() !== "search" || document.querySelector("dialog[open]")) return;
    const data = event.clipboardData;
    const file = data && imageFrom(data.items);
    if (file) {
      event.preventDefault();
      act(() => search({ file }));
      return;
    }
    const target = event.target;
    if (target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement) return;
    const text = data ? data.getData("text/plain").trim() : "";
    if (looksLikeUrl(text)) {
      event.preventDefault();
      act(() => search({ url: text }));
    } else if (text && currentModel()?.text) {
      event.preventDefault();
      $("search-text").value = text.slice(0, 1000);
      act(() => search({ text: text.slice(0, 1000) }));
    }
  });

  $("search-url-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const url = $("search-url").value.trim();
    if (!url) {
      showError(new Error("Enter the URL of an image."));
      $("search-url").focus();
      return;
    }
    act(() => busy(event.submitter || $("search-url-form").querySelector("button"), () => search({ url })));
  });
  $("search-text-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("search-text").value.trim();
    if (!text) {
      showError(new Error("Type a few words describing the image."));
      $("search-text").focus();
      return;
    }
    act(() => busy($("search-text-button"), () => search({ text })));
  });
  const slider = $("min-similarity");
  slider.addEventListener("input", () => {
    $("min-similarity-value").textContent = slider.value;
  });
  $("filter").addEventListener("input", parseFilter);
}

// ---------------------------------------------------------------- add

/** The metadata object, null when empty, undefined when invalid (and the reason is shown). */
function checkMetadata() {
  const value = jsonObjectField("add-metadata", "Metadata", "Not valid JSON");
  $("add-button").disabled = value === undefined;
  return value;
}

function addResult(text, url, kind = "ok") {
  const box = $("add-result");
  box.replaceChildren();
  box.className = `add-result ${kind}`;
  if (url) {
    const frame = document.createElement("span");
    frame.className = "frame mini";
    const img = document.createElement("img");
    img.alt = "";
    img.referrerPolicy = "no-referrer";
    frame.append(img);
    thumbnail(img, url);
    box.append(frame);
  }
  const p = document.createElement("p");
  p.textContent = text;
  box.append(p);
}

async function addOne(button) {
  const url = $("add-url").value.trim();
  if (!url) {
    $("add-url").focus();
    throw new Error("Enter the URL of an image to add.");
  }
  const metadata = checkMetadata();
  if (metadata === undefined) {
    $("add-metadata").focus();
    throw new Error($("add-metadata-error").textContent);
  }
  if (!state.model) throw new Error("No model is ready.");
  const keep = $("add-keep").checked;
  addResult(`Adding to ${state.model}…`, null, "pending");
  try {
    await busy(button, () =>
      api(modelPath(keep ? "search_add" : "add"), { method: "POST", json: { url, metadata } }),
    );
  } catch (error) {
    if (error instanceof ApiError && error.status === 409) {
      addResult(`Already stored in ${state.model}, left unchanged: ${error.message}`, url, "found");
      return;
    }
    $("add-result").replaceChildren();
    throw error;
  }
  addResult(`Added to ${state.model}.`, url, "ok");
  $("add-url").value = "";
}

function bulkUrls() {
  const lines = $("bulk-urls")
    .value.split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith("#"));
  return { unique: [...new Set(lines)], given: lines.length };
}

function updateBulkHint() {
  const { unique, given } = bulkUrls();
  const repeats = given - unique.length;
  $("bulk-lines").textContent = unique.length
    ? `${unique.length} URL${unique.length === 1 ? "" : "s"}${repeats ? ` (${repeats} repeated line${repeats === 1 ? "" : "s"} ignored)` : ""}.`
    : "No URLs yet.";
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** `call()`, tried again a few times while the server answers 503 (no worker can take more right now). */
async function retryBusy(call, stopped) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 503) || attempt >= 4 || stopped()) throw error;
      await sleep(5000);
    }
  }
}

function addChunk(chunk) {
  const json = chunk.map((url) => ({ url }));
  return retryBusy(() => api(modelPath("add_bulk"), { method: "POST", json }), () => state.bulkStop);
}

async function addBulk(button) {
  const { unique: urls } = bulkUrls();
  if (!urls.length) {
    $("bulk-urls").focus();
    throw new Error("Enter at least one image URL, one per line.");
  }
  if (!state.model) throw new Error("No model is ready.");
  const model = state.model;
  const totals = { added: 0, found: 0, failed: [] };
  const progress = $("bulk-progress");
  progress.max = urls.length;
  progress.value = 0;
  $("bulk-progress-box").hidden = false;
  $("bulk-summary").hidden = true;
  $("bulk-stop").hidden = false;
  state.bulkStop = false;
  const show = (done, final) => {
    progress.value = done;
    $("bulk-progress-label").textContent = final
      ? `${final} ${done} of ${urls.length} in ${model}.`
      : `Adding to ${model}… ${done} of ${urls.length}`;
    $("bulk-added").textContent = String(totals.added);
    $("bulk-found").textContent = String(totals.found);
    $("bulk-failed").textContent = String(totals.failed.length);
    const list = $("bulk-failures");
    list.replaceChildren(
      ...totals.failed.map(({ url, error }) => {
        const li = document.createElement("li");
        const u = document.createElement("span");
        u.className = "url";
        u.textContent = url;
        const e = document.createElement("span");
        e.className = "why";
        e.textContent = error;
        li.append(u, e);
        return li;
      }),
    );
    $("bulk-failures-box").hidden = totals.failed.length === 0;
    $("bulk-failures-box").open = totals.failed.length > 0 && totals.failed.length <= 10;
    $("bulk-summary").hidden = done === 0 && !final;
  };
  let done = 0;
  await busy(button, async () => {
    try {
      const size = Number($("bulk-form").dataset.chunk) || BULK_CHUNK;
      for (let start = 0; start < urls.length; start += size) {
        if (state.bulkStop) break;
        const chunk = urls.slice(start, start + size);
        const result = await addChunk(chunk);
        totals.added += result.added.length;
        totals.found += result.found.length;
        totals.failed.push(...result.failed);
        done += chunk.length;
              show(done);
      }
      show(done, state.bulkStop && done < urls.length ? "Stopped after" : "Done:");
    } catch (error) {
      show(done, "Interrupted after");
      throw error;
    } finally {
      $("bulk-stop").hidden = true;
    }
  });
}

function setupAdd() {
  $("add-metadata").addEventListener("input", checkMetadata);
  $("add-form").addEventListener("submit", (event) => {
    event.preventDefault();
    act(() => addOne($("add-button")));
  });
  $("bulk-urls").addEventListener("input", updateBulkHint);
  $("bulk-form").addEventListener("submit", (event) => {
    event.preventDefault();
    act(() => addBulk($("bulk-button")));
  });
  $("bulk-stop").addEventListener("click", () => {
    state.bulkStop = true;
    $("bulk-progress-label").textContent = "Stopping after this batch…";
  });
}

// ---------------------------------------------------------------- compare

function previewCompare(input, img) {
  const url = input.value.trim();
  if (looksLikeUrl(url)) {
    img.hidden = false;
    if (img.getAttribute("src") !== url) {
      img.closest(".frame").classList.remove("broken");
      img.src = url;
    }
  } else {
    img.closest(".frame").classList.remove("broken");
    img.hidden = true;
    img.removeAttribute("src");
  }
}

function similarityWords(value) {
  if (value >= 99.5) return "the same image";
  if (value >= 90) return "very similar";
  if (value >= 75) return "similar";
  if (value >= 50) return "somewhat alike";
  return "different";
}

const compareFiles = { a: null, b: null };

function fileAsBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.addEventListener("load", () => resolve(String(reader.result).split(",", 2)[1] || ""));
    reader.addEventListener("error", () => reject(new Error(`Cannot read ${file.name}.`)));
    reader.readAsDataURL(file);
  });
}

// One side of a compare request: {url} for a URL, {image} (base64) for a chosen file.
async function compareSide(side) {
  const file = compareFiles[side];
  if (file) return { image: await fileAsBase64(file) };
  const url = $(`compare-${side}`).value.trim();
  return url ? { url } : null;
}

function clearCompare() {
  $("compare-score").hidden = true;
  for (const side of ["a", "b"]) showBox($(`compare-${side}-img`), null);
}

async function compare(button) {
  const [first, second] = [await compareSide("a"), await compareSide("b")];
  if (!first || !second) throw new Error("Give both images: a URL or a file for each.");
  if (!state.model) throw new Error("No model is ready.");
  for (const side of ["a", "b"]) {
    if (!compareFiles[side]) previewCompare($(`compare-${side}`), $(`compare-${side}-img`));
  }
  clearCompare();
  const body = { url: first.url, image: first.image, other: second.url, other_image: second.image, details: true };
  if ($("compare-flip").checked) body.flip = true;
  const answer = await busy(button, () => api(modelPath("compare"), { method: "POST", json: body }));
  const value = Number(answer.similarity);
  $("compare-value").textContent = value.toFixed(1);
  $("compare-meter").value = value;
  $("compare-label").textContent = `${similarityWords(value)} (${state.model})`;
  $("compare-mirrored").hidden = !answer.flipped;
  const match = answer.match;
  $("compare-match").textContent = match
    ? `The outlines show the same picture: ${percent(match.query_overlap)} of the first image, ` +
      `${percent(match.target_overlap)} of the second; ${corners(match)}.`
    : "";
  $("compare-match").hidden = !match;
  showBox($("compare-a-img"), match ? match.query_box : null);
  showBox($("compare-b-img"), match ? match.target_box : null);
  $("compare-score").hidden = false;
}

function setupCompare() {
  for (const side of ["a", "b"]) {
    const input = $(`compare-${side}`);
    const chooser = $(`compare-${side}-file`);
    const img = $(`compare-${side}-img`);
    img.addEventListener("error", () => {
      img.removeAttribute("src");
      img.closest(".frame").classList.add("broken");
    });
    input.addEventListener("change", () => previewCompare(input, img));
    input.addEventListener("input", () => {
      clearCompare();
      if (compareFiles[side]) {
        compareFiles[side] = null;
        chooser.value = "";
      }
    });
    chooser.addEventListener("change", () => {
      const file = chooser.files && chooser.files[0];
      clearCompare();
      if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
      compareFiles[side] = file || null;
      if (!file) return previewCompare(input, img);
      input.value = "";
      img.closest(".frame").classList.remove("broken");
      img.src = URL.createObjectURL(file);
      img.hidden = false;
    });
  }
  $("compare-flip").addEventListener("change", clearCompare);
  $("compare-form").addEventListener("submit", (event) => {
    event.preventDefault();
    act(() => compare($("compare-button")));
  });
}

// ---------------------------------------------------------------- duplicates

/** Forget the last walk's groups; a walk still running (for another model) stops showing its pages. */
function resetDuplicates() {
  state.dup.walk += 1;
  state.dup.stop = true;
  $("dup-groups").replaceChildren();
  $("dup-progress-box").hidden = true;
  $("dup-stop").hidden = true;
  $("dup-status").textContent = "";
}

/** The minimum similarity typed, undefined when empty (the model's default). */
function dupMinimum() {
  const input = $("dup-min");
  const text = input.value.trim();
  const value = Number(text);
  const valid = !input.validity.badInput && (!text || (Number.isFinite(value) && value >= 0 && value <= 100));
  input.setAttribute("aria-invalid", String(!valid));
  if (!valid) {
    input.focus();
    throw new Error("The minimum similarity must be a number from 0 to 100, or empty for the model's default.");
  }
  return text ? value : undefined;
}

function renderGroup(group, number) {
  const item = $("group-template").content.firstElementChild.cloneNode(true);
  const size = group.urls.length;
  item.querySelector(".group-title").textContent = `Group ${number}: ${size} images`;
  const row = item.querySelector(".dup-row");
  group.urls.forEach((url, index) => {
    const member = $("member-template").content.firstElementChild.cloneNode(true);
    const first = index === 0;
    // The similarity of each member to the group's first url (row 0 of the pairwise matrix).
    const similarity = first ? 100 : Number(group.similarity?.[0]?.[index]);
    member.dataset.url = url;
    member.dataset.similarity = String(similarity);
    const img = member.querySelector("img");
    img.alt = `Group ${number}, image ${index + 1}: ${shortName(url)}`;
    thumbnail(img, url);
    const badge = member.querySelector(".badge");
    badge.textContent = first ? "first" : similarity.toFixed(1);
    badge.classList.add(first ? "s-first" : scoreClass(similarity));
    badge.title = first ? "The group's first image" : "Similarity to the group's first image, 0 to 100";
    const name = member.querySelector(".name");
    name.textContent = shortName(url);
    name.title = url;
    const score = first
      ? "The group's first image"
      : `Similarity ${similarity.toFixed(2)} / 100 to the group's first image`;
    const thumb = member.querySelector(".thumb");
    const label = `Group ${number}, image ${index + 1} of ${size}: ${score.toLowerCase()}; details`;
    thumb.setAttribute("aria-label", label);
    thumb.addEventListener("click", () => openDetails({ url, similarity }, { score }));
    row.append(member);
  });
  return item;
}

async function findDuplicates(button) {
  if (!state.model) throw new Error("No model is ready.");
  const minimum = dupMinimum();
  const model = state.model;
  const path = (op) => `models/${encodeURIComponent(model)}/${op}`;
  const walk = ++state.dup.walk;
  const current = () => walk === state.dup.walk;
  state.dup.stop = false;
  const list = $("dup-groups");
  list.replaceChildren();
  $("dup-status").textContent = "";
  const progress = $("dup-progress");
  let [total, examined, groups, cursor] = [0, 0, 0, null];
  const show = (final) => {
    total = Math.max(total, examined); // images added meanwhile
    progress.max = Math.max(total, 1);
    progress.value = examined;
    const counted = `${examined.toLocaleString()} of ${total.toLocaleString()} stored image${total === 1 ? "" : "s"}`;
    const found = `${groups} group${groups === 1 ? "" : "s"} of copies`;
    $("dup-progress-label").textContent = final
      ? `${final} ${counted} examined in ${model}; ${found}.`
      : `Examining ${model}… ${counted}; ${found} so far.`;
  };
  await busy(button, async () => {
    $("dup-stop").hidden = false;
    try {
      total = await api(path("count"));
      if (!current()) return;
      $("dup-progress-box").hidden = false;
      show();
      do {
        const body = { cursor, limit: Number($("dup-form").dataset.page) || DUP_PAGE };
        if (minimum !== undefined) body.min_similarity = minimum;
        const page = await retryBusy(
          () => api(path("duplicates"), { method: "POST", json: body }),
          () => state.dup.stop,
        );
        if (!current()) return;
        for (const group of page.groups) list.append(renderGroup(group, ++groups));
        examined += page.examined;
        cursor = page.cursor;
        show();
      } while (cursor !== null && !state.dup.stop);
      show(cursor === null ? "Done:" : "Stopped:");
      if (total === 0) $("dup-status").textContent = `Nothing is stored in ${model} yet: add images first.`;
      else if (!groups) $("dup-status").textContent = `No copies found among the images examined in ${model}.`;
    } catch (error) {
      if (current()) show("Interrupted:");
      throw error;
    } finally {
      if (current()) $("dup-stop").hidden = true;
    }
  });
}

function setupDuplicates() {
  $("dup-form").addEventListener("submit", (event) => {
    event.preventDefault();
    act(() => findDuplicates($("dup-button")));
  });
  $("dup-min").addEventListener("input", () => $("dup-min").removeAttribute("aria-invalid"));
  $("dup-stop").addEventListener("click", () => {
    state.dup.stop = true;
    $("dup-progress-label").textContent = "Stopping after this page…";
  });
}

// ---------------------------------------------------------------- browse

async function loadBrowse() {
  if (!state.model) return;
  const browse = state.browse;
  const size = Number($("page-size").value);
  const cursor = browse.cursors[browse.page];
  $("browse-status").textContent = "Loading…";
  const [count, urls] = await Promise.all([
    api(modelPath("count")),
    api(modelPath("urls"), { method: "POST", json: { cursor, limit: size + 1 } }),
  ]);
  if (urls.length === 0 && browse.page > 0) {
    // The page emptied (its images were removed): show the one before.
    browse.page -= 1;
    browse.cursors.length = browse.page + 1;
    return loadBrowse();
  }
  $("count").textContent = count.toLocaleString();
  $("count-label").textContent = `image${count === 1 ? "" : "s"} stored in ${state.model}`;
  const shown = urls.slice(0, size);
  const more = urls.length > size;
  browse.cursors.length = browse.page + 1;
  if (more) browse.cursors.push(shown[shown.length - 1]);
  renderBrowse(shown);
  $("page-prev").disabled = browse.page === 0;
  $("page-next").disabled = !more;
  const first = browse.page * size + 1;
  $("page-number").textContent = shown.length ? `${first}–${first + shown.length - 1} of ${count.toLocaleString()}` : "";
  $("browse-status").textContent = count === 0 ? `Nothing is stored in ${state.model} yet: add images first.` : "";
}

function renderBrowse(urls) {
  const template = $("row-template");
  const rows = urls.map((url) => {
    const row = template.content.firstElementChild.cloneNode(true);
    row.dataset.url = url;
    thumbnail(row.querySelector("img"), url);
    const link = row.querySelector("a");
    link.href = url;
    link.textContent = url;
    row.querySelector(".again").addEventListener("click", () => {
      showTab("search");
      act(() => search({ url }));
    });
    row.querySelector(".again").setAttribute("aria-label", `Search with ${shortName(url)}`);
    const remove = row.querySelector(".remove");
    remove.setAttribute("aria-label", `Remove ${shortName(url)}`);
    remove.addEventListener("click", () => act(() => confirmRemove(url, remove)));
    return row;
  });
  $("browse-list").replaceChildren(...rows);
}

function confirmRemove(url, button) {
  const dialog = $("confirm-remove");
  $("confirm-model").textContent = state.model;
  $("confirm-url").textContent = url;
  dialog.returnValue = "";
  return new Promise((resolve, reject) => {
    dialog.addEventListener(
      "close",
      async () => {
        try {
          if (dialog.returnValue === "remove") {
            await busy(button, () => api(modelPath("remove"), { method: "POST", json: { url } }));
            await loadBrowse();
            $("browse-status").textContent = `Removed ${url}.`;
          }
          resolve();
        } catch (error) {
          reject(error);
        } finally {
          if (button.isConnected) button.focus();
        }
      },
      { once: true },
    );
    dialog.showModal();
  });
}

function setupBrowse() {
  $("page-next").addEventListener("click", () => {
    state.browse.page += 1;
    act(loadBrowse);
  });
  $("page-prev").addEventListener("click", () => {
    state.browse.page = Math.max(0, state.browse.page - 1);
    act(loadBrowse);
  });
  $("page-size").addEventListener("change", () => {
    state.browse = { cursors: [null], page: 0 };
    act(loadBrowse);
  });
  $("browse-refresh").addEventListener("click", () => act(loadBrowse));
}

// ---------------------------------------------------------------- start

function start() {
  setupKey();
  setupTabs();
  setupSearch();
  setupAdd();
  setupCompare();
  setupDuplicates();
  setupBrowse();
  setupDetails();
  $("model").addEventListener("change", (event) => setModel(event.target.value));
  showTab(location.hash.slice(1));
  act(loadModelsAction);
}

start();
