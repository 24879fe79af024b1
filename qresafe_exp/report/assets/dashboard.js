// The dashboard's behaviour: sortable and filterable tables, Plotly figures, the sample browser.
// Data comes from the page's own <script id="dashboard-data"> element; nothing is fetched.
"use strict";
const DATA = JSON.parse(document.getElementById("dashboard-data").textContent);

// a cell's sort key: its number (first number in "0.84 [0.73,0.91]", "+0.81*", "W4"), else its text
function sortKey(td) {
  const raw = td.dataset.sort !== undefined ? td.dataset.sort : td.textContent.trim();
  if (raw === "-" || raw === "") return null;  // missing values sort last either way
  const m = raw.match(/^[^\d+-]{0,12}([+-]?\d+(\.\d+)?(e[+-]?\d+)?)/i);
  return m ? parseFloat(m[1]) : raw.toLowerCase();
}

function sortTable(table, col) {
  const th = table.tHead.rows[0].cells[col];
  const asc = th.getAttribute("aria-sort") !== "ascending";
  for (const h of table.tHead.rows[0].cells) h.removeAttribute("aria-sort");
  th.setAttribute("aria-sort", asc ? "ascending" : "descending");
  const rows = Array.from(table.tBodies[0].rows);
  rows.sort((a, b) => {
    const x = sortKey(a.cells[col]), y = sortKey(b.cells[col]);
    if (x === null || y === null) return x === y ? 0 : (x === null ? 1 : -1);
    const order = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === "number" ? -1 : 1);
    return asc ? order : -order;
  });
  for (const r of rows) table.tBodies[0].appendChild(r);
}

// one <select> per axis column (header marked data-axis) and a text box; rows must match all of them
function addFilters(table) {
  const bar = document.querySelector(`.filters[data-for="${table.id}"]`);
  const heads = Array.from(table.tHead.rows[0].cells);
  const selects = [];
  heads.forEach((th, col) => {
    if (!("axis" in th.dataset)) return;
    const values = [...new Set(Array.from(table.tBodies[0].rows, r => r.cells[col].textContent))].sort();
    if (values.length < 2) return;
    const label = document.createElement("label");
    const select = document.createElement("select");
    select.dataset.col = col;
    select.add(new Option(`all (${values.length})`, ""));
    for (const v of values) select.add(new Option(v, v));
    label.append(th.textContent + " ", select);
    bar.append(label);
    selects.push(select);
  });
  const search = document.createElement("input");
  search.type = "search"; search.placeholder = "filter rows";
  bar.append(search);
  const apply = () => {
    const q = search.value.toLowerCase();
    for (const r of table.tBodies[0].rows) {
      const ok = selects.every(s => !s.value || r.cells[s.dataset.col].textContent === s.value)
        && (!q || r.textContent.toLowerCase().includes(q));
      r.hidden = !ok;
    }
  };
  for (const s of selects) s.addEventListener("change", apply);
  search.addEventListener("input", apply);
}

for (const table of document.querySelectorAll("table.sortable")) {
  Array.from(table.tHead.rows[0].cells).forEach((th, col) => th.addEventListener("click", () => sortTable(table, col)));
  addFilters(table);
}

for (const div of document.querySelectorAll(".plot")) {
  const fig = DATA.figures[div.dataset.figure];
  // no "share" button: it would upload the study's numbers to Plotly's cloud
  window.Plotly.newPlot(div, fig.data, fig.layout,
                        {displaylogo: false, responsive: true, modeBarButtonsToRemove: ["sendChartToCloud"]});
}

// ---- sample browser ----
let S = null;  // the samples, inflated from the page's own gzip+base64 block (see loadSamples)
const SHOWN = 200;  // rows drawn at once: the DOM stays light for a 1,000-sample cell
const el = id => document.getElementById(id);

function text(tag, value, cls) {
  const node = document.createElement(tag);
  node.textContent = value;
  if (cls) node.className = cls;
  return node;
}

// a verdict in words: true means "jailbroken" on a harmful prompt, "refused" on a refusal-suite prompt
const WORDS = {harm: ["safe", "jailbroken"], refusal: ["complied", "refused"]};

function verdictBadges(s) {
  const span = document.createElement("span");
  const words = WORDS[s.kind] || ["false", "true"];
  for (const [judge, v] of Object.entries(s.verdicts || {}))
    span.append(text("span", `${judge}: ${v === null ? "failed" : words[+v]}`, `v v-${v}`));
  return span;
}

function responseNode(s) {
  const cut = s.length > s.response.length ? ` [cut at ${s.response.length} of ${s.length} characters]` : "";
  if (s.response.length <= 300) return text("pre", s.response + cut);
  const details = document.createElement("details");
  details.append(text("summary", s.response.slice(0, 300) + " …"), text("pre", s.response + cut));
  return details;
}

function drawSamples() {
  const cell = S.cells[el("s-cell").value];
  const suite = el("s-suite").value, q = el("s-search").value.toLowerCase();
  const ref = S.cells.find(c => c.cell === cell.reference_cell);
  const rows = cell.samples.filter(s => {
    const p = S.prompts[s.p];
    return (!suite || p.suite === suite) && (!el("s-disagree").checked || s.disagree)
      && (!el("s-vsfp").checked || s.vs_fp) && (!el("s-degenerate").checked || s.degenerate)
      && (!q || p.prompt.toLowerCase().includes(q) || s.response.toLowerCase().includes(q));
  });
  const body = el("s-table").tBodies[0];
  body.replaceChildren();
  for (const s of rows.slice(0, SHOWN)) {
    const p = S.prompts[s.p], tr = body.insertRow();
    tr.dataset.disagree = s.disagree; tr.dataset.vsfp = s.vs_fp;
    if (s.disagree) tr.className = "disagree";
    tr.insertCell().append(text("div", p.suite), text("div", p.id + (s.decoding ? ` (${s.decoding})` : ""), "note"),
                           text("div", p.category || "", "note"));
    tr.insertCell().append(text("pre", p.prompt));
    tr.insertCell().append(responseNode(s));
    tr.insertCell().append(verdictBadges(s));
    const deg = tr.insertCell();
    if (s.degenerate)
      deg.append(text("div", "degenerate" + (s.reasons.length ? ": " + s.reasons.join(", ") : ""), "flag"));
    for (const [k, v] of Object.entries(s.flags)) deg.append(text("div", `${k} ${v}`, "note"));
    const fp = tr.insertCell();
    const other = ref && s.fp_index !== null ? ref.samples[s.fp_index] : null;
    if (other) {
      if (s.vs_fp) fp.append(text("div", "verdict changed", "flag"));
      fp.append(verdictBadges(other), responseNode(other));
    } else fp.append(text("span", cell.reference_cell ? "-" : "(this is an FP cell)", "note"));
  }
  el("s-count").textContent = `${rows.length} of ${cell.samples.length} rows match` +
    (rows.length > SHOWN ? `; the first ${SHOWN} are shown, narrow the filters for the rest` : "");
  el("s-note").textContent = cell.note || "";
  el("s-vsfp").disabled = !ref;
}

function pickCell() {
  const cell = S.cells[el("s-cell").value];
  const suites = [...new Set(cell.samples.map(s => S.prompts[s.p].suite))].sort();
  const select = el("s-suite");
  select.replaceChildren(new Option(`all (${suites.length})`, ""));
  for (const name of suites) select.add(new Option(name, name));
  drawSamples();
}

async function loadSamples() {
  const packed = document.getElementById("dashboard-samples");
  if (!packed) return null;
  const bytes = Uint8Array.from(atob(packed.textContent), c => c.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return JSON.parse(await new Response(stream).text());
}

function startBrowser() {
  S.cells.forEach((c, i) => el("s-cell").add(new Option(`${c.cell} (${c.samples.length})`, i)));
  const first = S.cells.findIndex(c => c.samples.length);
  el("s-cell").value = Math.max(first, 0);
  el("s-cell").addEventListener("change", pickCell);
  el("s-suite").addEventListener("change", drawSamples);
  for (const id of ["s-disagree", "s-vsfp", "s-degenerate"]) el(id).addEventListener("change", drawSamples);
  el("s-search").addEventListener("input", drawSamples);
  for (const a of document.querySelectorAll("a.to-samples"))
    a.addEventListener("click", () => {
      el("s-cell").value = S.cells.findIndex(c => c.cell === a.dataset.cell);
      pickCell();
    });
  pickCell();
}

if (el("s-cell")) {
  loadSamples().then(data => {
    S = data;
    if (S) startBrowser();
    document.body.dataset.samples = "ready";  // the tests wait for this
  }).catch(err => {
    el("s-note").textContent = `the samples could not be unpacked in this browser (${err}); ` +
      "they need DecompressionStream (Chrome 80, Firefox 113, Safari 16.4 or later)";
    document.body.dataset.samples = "failed";
    throw err;
  });
}
