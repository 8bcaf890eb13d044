// The status page: polls /v1/status every second and redraws the map and the tables.
// DOM calls only (textContent, never innerHTML), so nothing from the server is markup.
"use strict";

const POLL_MS = 1000;
const SVG = "http://www.w3.org/2000/svg";
let lastUpdate = 0;
let lastProblem = "";

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "—" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function svgElement(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

// Equirectangular: longitude -180..180 to x 0..360, latitude 90..-90 to y 0..180.
function project(lat, lon) {
  return [lon + 180, 90 - lat];
}

function drawGraticule(map) {
  const grid = svgElement("g", { class: "graticule" });
  for (let lon = -180; lon <= 180; lon += 30) {
    const [x] = project(0, lon);
    grid.appendChild(svgElement("line", { x1: x, y1: 0, x2: x, y2: 180,
      class: lon === 0 ? "meridian" : "" }));
  }
  for (let lat = -90; lat <= 90; lat += 30) {
    const [, y] = project(lat, 0);
    grid.appendChild(svgElement("line", { x1: 0, y1: y, x2: 360, y2: y,
      class: lat === 0 ? "equator" : "" }));
  }
  map.appendChild(grid);
  map.appendChild(svgElement("g", { id: "region-dots" }));
}

function percent(value) {
  return typeof value === "number" ? (value * 100).toFixed(0) + " %" : null;
}

function drawRegions(data) {
  const dots = document.getElementById("region-dots");
  const body = document.querySelector("#regions tbody");
  const shares = data.dns_split.shares || {};
  dots.replaceChildren();
  body.replaceChildren();
  for (const region of data.regions) {
    const [x, y] = project(region.latitude, region.longitude);
    const dot = svgElement("g", { class: "region " + region.state,
      "data-region": region.name, "data-state": region.state });
    dot.appendChild(svgElement("circle", { cx: x, cy: y, r: 4 }));
    // Labels of regions near the right edge go on the dot's left, so none is cut off.
    const east = x > 290;
    dot.appendChild(svgElement("text", { x: east ? x - 6 : x + 6, y: y + 2,
      "text-anchor": east ? "end" : "start" }, region.name + " (" + region.state + ")"));
    dot.appendChild(svgElement("title", {}, region.name + ": " + region.state +
      " (" + region.cause + (region.reason ? ": " + region.reason : "") + ")"));
    dots.appendChild(dot);

    const row = document.createElement("tr");
    row.dataset.region = region.name;
    row.dataset.state = region.state;
    cell(row, region.name);
    cell(row, region.state, "state " + region.state);
    cell(row, region.cause + (region.reason ? ": " + region.reason : ""));
    cell(row, percent(region.headroom));
    cell(row, typeof region.requests_per_s === "number" ? region.requests_per_s.toFixed(1) : null);
    cell(row, typeof region.p95_ms === "number" ? region.p95_ms.toFixed(1) + " ms" : null);
    cell(row, data.dns_split.available ? percent(shares[region.name] || 0) : null);
    const up = region.backends.filter((b) => b.health === "up").length;
    cell(row, region.backends.length ? up + "/" + region.backends.length + " up" : null);
    body.appendChild(row);
  }
  document.getElementById("split-note").textContent =
    data.dns_split.available ? "DNS share: answers per region, from " + data.dns_split.nodes +
      " node(s)." : data.dns_split.note;
}

function ago(seconds) {
  return seconds < 1 ? "just now" : seconds.toFixed(0) + " s ago";
}

function drawNodes(nodes) {
  const body = document.querySelector("#nodes tbody");
  body.replaceChildren();
  for (const node of nodes) {
    const row = document.createElement("tr");
    row.dataset.node = node.node_id;
    cell(row, node.node_id + (node.host ? " (" + node.host + ")" : ""));
    cell(row, node.state, "state " + node.state);
    cell(row, node.version);
    cell(row, node.lag_versions === 0 ? "current" : node.lag_versions + " behind",
      node.lag_versions === 0 ? "" : "state down");
    cell(row, ago(node.seconds_since_contact));
    cell(row, node.error);
    body.appendChild(row);
  }
  if (!nodes.length) {
    const row = document.createElement("tr");
    cell(row, "no DNS node has reported").colSpan = 6;
    body.appendChild(row);
  }
}

function drawCertificates(certificates) {
  const body = document.querySelector("#certificates tbody");
  body.replaceChildren();
  for (const cert of certificates.items) {
    const row = document.createElement("tr");
    cell(row, cert.name);
    cell(row, cert.names.join(", "));
    cell(row, cert.not_after);
    cell(row, cert.expired ? "expired" : cert.days_left, "state " + (cert.expired ? "down" : "warn"));
    body.appendChild(row);
  }
  document.getElementById("certificates-note").textContent = certificates.items.length
    ? "" : "None expires within " + certificates.within_days + " days.";
}

function shortDetail(detail) {
  const text = JSON.stringify(detail);
  return text.length > 140 ? text.slice(0, 139) + "…" : text;
}

function drawEvents(events) {
  const body = document.querySelector("#events tbody");
  body.replaceChildren();
  for (const event of events) {
    const row = document.createElement("tr");
    cell(row, new Date(event.time * 1000).toISOString().replace("T", " ").slice(0, 19) + "Z");
    cell(row, event.type, "type");
    cell(row, event.subject);
    cell(row, event.actor);
    cell(row, shortDetail(event.detail), "detail");
    body.appendChild(row);
  }
  if (!events.length) {
    const row = document.createElement("tr");
    cell(row, "no events yet").colSpan = 5;
    body.appendChild(row);
  }
}

function render(data) {
  document.getElementById("version").textContent = "version " + data.version;
  drawRegions(data);
  drawNodes(data.nodes);
  drawCertificates(data.certificates);
  drawEvents(data.events);
}

function showFreshness() {
  const label = document.getElementById("freshness");
  const age = (Date.now() - lastUpdate) / 1000;
  const stale = !lastUpdate || age > 3 * POLL_MS / 1000;
  label.className = "pill " + (stale ? "stale" : "fresh");
  label.textContent = !lastUpdate ? "connecting…" + (lastProblem ? " (" + lastProblem + ")" : "")
    : stale ? "stale: no update for " + age.toFixed(0) + " s" + (lastProblem ? " (" + lastProblem + ")" : "")
    : "live";
}

async function poll() {
  try {
    const response = await fetch("/v1/status", { credentials: "same-origin", cache: "no-store",
      headers: { Accept: "application/json" } });
    if (response.status === 401 || response.status === 403) {
      window.location.reload(); // the session ended: the server shows the login form
      return;
    }
    if (!response.ok) throw new Error("HTTP " + response.status);
    render(await response.json());
    lastUpdate = Date.now();
    lastProblem = "";
  } catch (error) {
    lastProblem = error.message || String(error);
  }
  showFreshness();
  setTimeout(poll, POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  drawGraticule(document.getElementById("map"));
  setInterval(showFreshness, 1000);
  poll();
});
