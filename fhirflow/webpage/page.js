"use strict";
// The page's whole behaviour. Every value that comes from the server is put into the page with
// textContent (never as markup): resource content is data, and stored markup must stay text.
(() => {
  // The server says how many path segments of this URL follow the FHIR base (0 at the base itself).
  const depth = Number(document.querySelector('meta[name="fhirflow-depth"]').content) || 0;
  const segments = location.pathname.replace(/\/+$/, "").split("/");
  const opened = depth ? segments.slice(-depth).map(decodeURIComponent) : [];
  const base = location.origin + (depth ? segments.slice(0, -depth) : segments).join("/");
  const exportsKey = "fhirflow.exports " + base;
  const byId = (id) => document.getElementById(id);

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function linkButton(text, onClick) {
    const button = el("button", text, "link");
    button.type = "button";
    button.addEventListener("click", onClick);
    return button;
  }

  function row(cells) {
    const tr = document.createElement("tr");
    for (const cell of cells) {
      const td = document.createElement("td");
      if (cell instanceof Node) td.appendChild(cell);
      else td.textContent = cell === undefined || cell === null ? "" : String(cell);
      tr.appendChild(td);
    }
    return tr;
  }

  function say(text) {
    byId("message").textContent = text || "";
  }

  // A URL the server gave (a paging link, a status URL) is fetched on this page's own origin.
  function sameOrigin(url) {
    const parsed = new URL(url, base + "/");
    return location.origin + parsed.pathname + parsed.search;
  }

  async function api(pathOrUrl, options = {}) {
    const url = /^https?:/.test(pathOrUrl) ? sameOrigin(pathOrUrl) : base + pathOrUrl;
    const headers = { Accept: "application/fhir+json", ...(options.headers || {}) };
    const token = byId("token").value.trim();
    if (token) headers.Authorization = "Bearer " + token;
    const reply = await fetch(url, { method: options.method || "GET", headers, body: options.body });
    const text = await reply.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch (_) {
      json = null;
    }
    return { status: reply.status, headers: reply.headers, json };
  }

  function problem(reply, what) {
    const issue = reply.json && reply.json.resourceType === "OperationOutcome" && reply.json.issue ? reply.json.issue[0] : null;
    const detail = issue ? issue.diagnostics || (issue.details && issue.details.text) || issue.code : "";
    return `${what}: HTTP ${reply.status}${detail ? " — " + detail : ""}`;
  }

  // ---- resource types with counts -------------------------------------------------------------
  async function loadTypes() {
    const reply = await api("/metadata?_summary=false");
    if (reply.status !== 200 || !reply.json) {
      say(problem(reply, "Capabilities"));
      return;
    }
    const rest = (reply.json.rest || [])[0] || {};
    const types = (rest.resource || []).map((r) => r.type).filter(Boolean).sort();
    byId("server").textContent = `${reply.json.software ? reply.json.software.name || "" : ""} FHIR ${reply.json.fhirVersion || ""} at ${base}`;
    const select = byId("search-type");
    const body = byId("types").tBodies[0];
    const rows = new Map();
    for (const type of types) {
      select.appendChild(el("option", type));
      const count = el("span", "…");
      const tr = row([linkButton(type, () => runSearch(type, "")), count]);
      tr.lastChild.className = "num";
      tr.dataset.type = type;
      body.appendChild(tr);
      rows.set(type, { tr, count });
    }
    if (opened.length) select.value = opened[0];
    applyHideEmpty();
    // A few counts at a time: the server answers each from its index.
    const queue = types.slice();
    const worker = async () => {
      while (queue.length) {
        const type = queue.shift();
        const counted = await api(`/${type}?_summary=count`);
        const entry = rows.get(type);
        entry.count.textContent = counted.status === 200 && counted.json ? String(counted.json.total ?? "?") : `(${counted.status})`;
        entry.tr.dataset.count = entry.count.textContent;
        applyHideEmpty();
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
    byId("types").dataset.loaded = "true";
  }

  function applyHideEmpty() {
    const hide = byId("hide-empty").checked;
    for (const tr of byId("types").tBodies[0].rows) tr.hidden = hide && tr.dataset.count === "0";
  }

  // ---- search ---------------------------------------------------------------------------------
  function summaryOf(resource) {
    const name = (resource.name && resource.name[0]) || null;
    if (name && typeof name === "object") {
      return name.text || [...(name.given || []), name.family || ""].join(" ").trim();
    }
    if (typeof resource.name === "string") return resource.name;
    const concept = resource.code || resource.type;
    if (concept && typeof concept === "object") {
      return concept.text || ((concept.coding || [])[0] || {}).display || ((concept.coding || [])[0] || {}).code || "";
    }
    return resource.status || "";
  }

  let nextLink = null;

  async function runSearch(type, query, url) {
    byId("search-type").value = type;
    if (url === undefined) byId("search-query").value = query;
    const reply = await api(url || `/${encodeURIComponent(type)}${query ? "?" + query.replace(/^\?/, "") : ""}`);
    const body = byId("results").tBodies[0];
    body.replaceChildren();  // after the await: the last answer to arrive is the one shown
    nextLink = null;
    byId("search-next").hidden = true;
    if (reply.status !== 200 || !reply.json) {
      say(problem(reply, "Search"));
      byId("search-summary").textContent = "";
      return;
    }
    say("");
    const bundle = reply.json;
    let shown = 0;
    for (const entry of bundle.entry || []) {
      const resource = entry.resource || {};
      if (entry.search && entry.search.mode === "outcome") {
        for (const issue of resource.issue || []) say(issue.diagnostics || issue.code);
        continue;
      }
      const ref = `${resource.resourceType}/${resource.id}`;
      const tr = row([linkButton(ref, () => showResource(resource.resourceType, resource.id)), (resource.meta || {}).lastUpdated, summaryOf(resource)]);
      body.appendChild(tr);
      shown += 1;
    }
    const next = (bundle.link || []).find((l) => l.relation === "next");
    if (next) {
      nextLink = next.url;
      byId("search-next").hidden = false;
    }
    byId("search-summary").textContent = `${bundle.total !== undefined ? bundle.total + " found, " : ""}${shown} shown`;
  }

  // ---- one resource and its history -----------------------------------------------------------
  async function showResource(type, id, vid) {
    const path = `/${encodeURIComponent(type)}/${encodeURIComponent(id)}`;
    const reply = await api(vid ? `${path}/_history/${encodeURIComponent(vid)}` : path);
    byId("resource-section").hidden = false;
    byId("resource-title").textContent = `${type}/${id}${vid ? " version " + vid : ""}`;
    byId("resource-json").textContent = reply.json ? JSON.stringify(reply.json, null, 2) : "";
    if (reply.status !== 200) say(problem(reply, `Read ${type}/${id}`));
    else say("");
    const history = await api(`${path}/_history`);
    const body = byId("history").tBodies[0];
    body.replaceChildren();
    if (history.status !== 200 || !history.json) return;
    for (const entry of history.json.entry || []) {
      const version = (entry.resource && entry.resource.meta) || {};
      const vid = version.versionId || (entry.response && entry.response.etag) || "";
      const change = entry.request ? entry.request.method : "";
      const showVersion = () => {
        byId("resource-title").textContent = `${type}/${id} version ${vid}`;
        byId("resource-json").textContent = entry.resource ? JSON.stringify(entry.resource, null, 2) : "(deleted)";
      };
      body.appendChild(row([vid, version.lastUpdated || (entry.response && entry.response.lastModified), change, linkButton("show", showVersion)]));
    }
    byId("history").dataset.loaded = `${type}/${id}`;
  }

  // ---- export jobs ----------------------------------------------------------------------------
  function trackedExports() {
    try {
      return JSON.parse(localStorage.getItem(exportsKey) || "[]");
    } catch (_) {
      return [];
    }
  }

  function track(url) {
    const jobs = trackedExports().filter((u) => u !== url);
    jobs.unshift(url);
    localStorage.setItem(exportsKey, JSON.stringify(jobs.slice(0, 20)));
  }

  function forget(url) {
    localStorage.setItem(exportsKey, JSON.stringify(trackedExports().filter((u) => u !== url)));
  }

  async function startExport() {
    const reply = await api("/$export", { headers: { Prefer: "respond-async" } });
    const location_ = reply.headers.get("Content-Location");
    if (reply.status !== 202 || !location_) {
      say(problem(reply, "Export kick-off"));
      return;
    }
    say("");
    track(location_);
    await refreshExports();
  }

  async function refreshExports() {
    const body = byId("exports").tBodies[0];
    const rows = [];  // swapped in at the end, so that two refreshes at once never mix their rows
    for (const url of trackedExports()) {
      const reply = await api(url);
      let status;
      let files = "";
      if (reply.status === 202) {
        status = "in progress" + (reply.headers.get("X-Progress") ? ` (${reply.headers.get("X-Progress")})` : "");
      } else if (reply.status === 200 && reply.json) {
        status = "complete";
        files = (reply.json.output || []).map((o) => `${o.type}${o.count !== undefined ? ": " + o.count : ""}`).join(", ") || "no files";
        if ((reply.json.error || []).length) files += ` (${reply.json.error.length} error files)`;
      } else {
        status = problem(reply, "status");
      }
      const job = new URL(url, base + "/").pathname.split("/").pop();
      const tr = row([job, status, files, linkButton("forget", () => { forget(url); refreshExports(); })]);
      tr.dataset.status = status;
      rows.push(tr);
    }
    body.replaceChildren(...rows);
    byId("exports").dataset.loaded = "true";
  }

  // ---- subscriptions --------------------------------------------------------------------------
  async function refreshSubscriptions() {
    const body = byId("subscriptions").tBodies[0];
    const reply = await api("/Subscription/$status");
    if (reply.status !== 200 || !reply.json) {
      body.replaceChildren(row([problem(reply, "Subscription status"), "", "", ""]));
      return;
    }
    const rows = [];
    for (const entry of reply.json.entry || []) {
      const params = {};
      for (const p of (entry.resource || {}).parameter || []) params[p.name] = p;
      const ref = params.subscription && params.subscription.valueReference ? params.subscription.valueReference.reference || "" : "";
      const short = ref.split("/").slice(-2).join("/");
      const errors = ((entry.resource || {}).parameter || []).filter((p) => p.name === "error").map((p) => (p.valueCodeableConcept || {}).text || ((p.valueCodeableConcept || {}).coding || [{}])[0].code || "").join("; ");
      const tr = row([
        linkButton(short, () => showResource("Subscription", short.split("/")[1])),
        params.status ? params.status.valueCode : "",
        params["events-since-subscription-start"] ? params["events-since-subscription-start"].valueString : "",
        errors,
      ]);
      tr.children[2].className = "num";
      rows.push(tr);
    }
    body.replaceChildren(...rows);
    byId("subscriptions").dataset.loaded = "true";
  }

  // ---- wiring ---------------------------------------------------------------------------------
  const tokenBox = byId("token");
  tokenBox.value = sessionStorage.getItem("fhirflow.token") || "";
  tokenBox.addEventListener("change", () => {
    sessionStorage.setItem("fhirflow.token", tokenBox.value.trim());
    start();
  });
  byId("hide-empty").addEventListener("change", applyHideEmpty);
  byId("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    runSearch(byId("search-type").value, byId("search-query").value.trim());
  });
  byId("search-next").addEventListener("click", () => {
    if (nextLink) runSearch(byId("search-type").value, byId("search-query").value, nextLink);
  });
  byId("open-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const [type, id] = byId("open-ref").value.trim().replace(/^\/+/, "").split("/");
    if (type && id) showResource(type, id);
  });
  byId("export-start").addEventListener("click", startExport);
  byId("export-add-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const url = byId("export-add-url").value.trim();
    if (url) {
      track(url);
      byId("export-add-url").value = "";
      refreshExports();
    }
  });
  byId("exports-refresh").addEventListener("click", refreshExports);
  byId("subscriptions-refresh").addEventListener("click", refreshSubscriptions);

  function start() {
    delete byId("types").dataset.loaded;
    byId("types").tBodies[0].replaceChildren();
    byId("search-type").replaceChildren();
    loadTypes().catch((error) => say(String(error)));
    refreshExports().catch((error) => say(String(error)));
    refreshSubscriptions().catch((error) => say(String(error)));
    openFromUrl().catch((error) => say(String(error)));
  }

  // Opened at a FHIR URL (a search, a resource, a version, a history): show what it names.
  async function openFromUrl() {
    const [type, second, third, fourth] = opened;
    if (!type) return;
    if (opened.length === 1) await runSearch(type, location.search.slice(1));
    else if (second === "_history") await runSearch(type, "", `/${encodeURIComponent(type)}/_history${location.search}`);
    else await showResource(type, second, third === "_history" ? fourth : undefined);
  }
  start();
})();
