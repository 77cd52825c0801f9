// Roost dashboard: one ES module, no build step, no library. Every view calls the public REST API
// (/v1/mqtt, /api/v1) with the session cookie; changes carry the session's CSRF token in X-CSRF-Token.
// Untrusted text is only ever set as textContent, never as HTML.

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const statusRegion = document.getElementById("status");
const session = { user: null, csrf: null };
let cleanups = [];

// -- small DOM helpers ----------------------------------------------------------------------------------

function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function announce(text) {
  statusRegion.textContent = "";
  setTimeout(() => { statusRegion.textContent = text; }, 50);
}

let uid = 0;
const nextId = (prefix) => `${prefix}-${++uid}`;

function when(iso) {
  if (!iso) return "never";
  const date = typeof iso === "number" ? new Date(iso * 1000) : new Date(iso);
  return isNaN(date) ? String(iso) : date.toLocaleString();
}

function duration(seconds) {
  const d = Math.floor(seconds / 86400), hr = Math.floor(seconds / 3600) % 24, m = Math.floor(seconds / 60) % 60;
  if (d) return `${d} d ${hr} h`;
  if (hr) return `${hr} h ${m} min`;
  if (m) return `${m} min ${Math.floor(seconds % 60)} s`;
  return `${Math.floor(seconds)} s`;
}

// -- the API -------------------------------------------------------------------------------------------

class Problem extends Error {
  constructor(status, message, fields = {}) {
    super(message);
    this.status = status;
    this.fields = fields;
  }
}

// What an error means, in words a person understands.
function explain(problem) {
  const said = problem.message;
  switch (true) {
    case problem.status === 0: return "Roost did not answer. Check that it is running and your network is up, then try again.";
    case problem.status === 401: return "Your session has ended. Please sign in again.";
    case problem.status === 403: return said || "You are not allowed to do that.";
    case problem.status === 404: return "It is not there any more: it may have been deleted meanwhile. " + (said || "");
    case problem.status === 413: return "That is too large for Roost to accept.";
    case problem.status === 429: return said || "Too many requests: wait a moment and try again.";
    case problem.status >= 500: return "Something went wrong inside Roost. Try again; if it keeps happening, look at the server's log.";
    default: return said || "That did not work.";
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && session.csrf) headers["X-CSRF-Token"] = session.csrf;
  let response;
  try {
    response = await fetch(path, { method, headers, credentials: "same-origin",
                                   body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new Problem(0, "");
  }
  let data = null;
  try { data = await response.json(); } catch { data = null; }
  if (!response.ok) {
    const problem = new Problem(response.status, (data && data.message) || "", (data && data.errors) || {});
    if (response.status === 401 && session.user && !path.startsWith("/dashboard/session")) {
      signedOut("Your session has ended. Please sign in again.");
    }
    throw problem;
  }
  return data;
}

// Every item of a paginated list (projects, devices and topics come 15 to a page, API keys 10, users 100).
async function everyPage(path) {
  const items = [];
  for (let page = 1; page <= 1000; page++) {
    const body = await api("GET", `${path}${path.includes("?") ? "&" : "?"}page=${page}`);
    items.push(...body.data);
    const total = body.pagination ? body.pagination.total : items.length;
    if (!body.data.length || items.length >= total) break;
  }
  return items;
}

// -- forms that show each error next to its field ------------------------------------------------------

// fields: [{name, label, type, required, hint, options, value, autocomplete}]
function form({ fields, submit, onSubmit, layout = "stack", cancel }) {
  const alert = h("p", { class: "alert", role: "alert" });
  const inputs = {};
  const errors = {};
  const rows = fields.map((f) => {
    const id = nextId(`f-${f.name}`);
    const errorId = `${id}-error`;
    const hintId = f.hint ? `${id}-hint` : null;
    let input;
    if (f.type === "select") {
      input = h("select", { id, name: f.name }, f.options.map(([value, text]) =>
        h("option", { value, selected: String(f.value) === String(value) }, text)));
    } else if (f.type === "checkbox") {
      input = h("input", { id, name: f.name, type: "checkbox", checked: !!f.value });
    } else if (f.type === "textarea") {
      input = h("textarea", { id, name: f.name, rows: 3 }, f.value || "");
    } else {
      input = h("input", { id, name: f.name, type: f.type || "text", value: f.value ?? "",
                           required: f.required, autocomplete: f.autocomplete || "off",
                           list: f.list, placeholder: f.placeholder });
    }
    input.setAttribute("aria-describedby", [hintId, errorId].filter(Boolean).join(" "));
    inputs[f.name] = input;
    errors[f.name] = h("p", { class: "field-error", id: errorId });
    const label = h("label", { for: id }, f.label);
    if (f.type === "checkbox") {
      return h("div", { class: "field check" }, input, label, errors[f.name]);
    }
    return h("div", { class: "field" }, label, input, hintId && h("p", { class: "hint", id: hintId }, f.hint), errors[f.name]);
  });
  const button = h("button", { type: "submit" }, submit);
  const node = h("form", { class: layout, novalidate: true }, rows,
                 h("div", { class: "actions" }, button, cancel), alert);
  const clear = () => {
    alert.textContent = "";
    for (const name of Object.keys(errors)) { errors[name].textContent = ""; inputs[name].removeAttribute("aria-invalid"); }
  };
  node.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear();
    const values = {};
    for (const f of fields) {
      const input = inputs[f.name];
      values[f.name] = f.type === "checkbox" ? input.checked : input.value;
    }
    button.disabled = true;
    try {
      await onSubmit(values);
    } catch (problem) {
      if (!(problem instanceof Problem)) throw problem;
      let first = null;
      for (const [name, message] of Object.entries(problem.fields || {})) {
        if (errors[name]) {
          errors[name].textContent = message;
          inputs[name].setAttribute("aria-invalid", "true");
          first = first || inputs[name];
        }
      }
      if (first) first.focus();
      else alert.textContent = explain(problem);
    } finally {
      button.disabled = false;
    }
  });
  node.fail = (name, message) => {
    if (errors[name]) { errors[name].textContent = message; inputs[name].setAttribute("aria-invalid", "true"); inputs[name].focus(); }
    else alert.textContent = message;
  };
  node.inputs = inputs;
  return node;
}

// An error shown at the top of a view (a list that could not load, a delete that failed).
function viewAlert() {
  const node = h("p", { class: "alert", role: "alert" });
  node.show = (problem) => { node.textContent = problem instanceof Problem ? explain(problem) : String(problem); };
  node.clear = () => { node.textContent = ""; };
  return node;
}

// A modal confirmation; resolves true when confirmed. Escape or Cancel resolve false.
function confirmDialog(title, message, action = "Delete") {
  return new Promise((resolve) => {
    const titleId = nextId("dialog-title");
    const cancel = h("button", { type: "button", class: "secondary", autofocus: true }, "Cancel");
    const ok = h("button", { type: "button", class: "danger solid" }, action);
    const dialog = h("dialog", { "aria-labelledby": titleId },
      h("h2", { id: titleId }, title), h("p", {}, message), h("div", { class: "actions" }, cancel, ok));
    const done = (answer) => { dialog.close(); dialog.remove(); resolve(answer); };
    cancel.addEventListener("click", () => done(false));
    ok.addEventListener("click", () => done(true));
    dialog.addEventListener("cancel", (event) => { event.preventDefault(); done(false); });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}

async function copy(text, what) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // Plain HTTP on another host has no clipboard API: fall back to a selection.
    const area = h("textarea", { "aria-hidden": "true", style: "position:fixed;left:-999px" }, text);
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  announce(`${what} copied`);
}

// Labelled values with copy buttons: credentials, keys.
function secrets(pairs) {
  return h("div", { class: "secret" }, pairs.flatMap(([label, value]) => [
    h("span", { class: "k muted" }, label),
    h("code", { "data-field": label }, value),
    h("button", { type: "button", class: "secondary", "aria-label": `Copy ${label.toLowerCase()}`,
                  onclick: () => copy(value, label) }, "Copy"),
  ]));
}

function table(caption, headers, rows, empty) {
  return h("div", { class: "table-wrap" }, h("table", {},
    h("caption", { class: "visually-hidden" }, caption),
    h("thead", {}, h("tr", {}, headers.map((text) => h("th", { scope: "col" }, text)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { class: "empty", colspan: headers.length }, empty)))));
}

function every(ms, fn) {
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    try { await fn(); } catch (problem) { if (!(problem instanceof Problem)) console.error(problem); }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  let timer = setTimeout(tick, 0);
  cleanups.push(() => { stopped = true; clearTimeout(timer); });
}

// -- the views -----------------------------------------------------------------------------------------

function page(title, ...content) {
  document.title = `${title} · Roost dashboard`;
  const heading = h("h1", { tabindex: "-1" }, title);
  main.replaceChildren(heading, ...content);
  return heading;
}

async function overview() {
  const cards = h("div", { class: "cards" });
  const chart = h("div", { class: "chart panel" });
  const alert = viewAlert();
  page("Overview", alert, cards, h("h2", {}, "Messages per second"), chart);
  const history = [];
  let previous = null;
  const card = (label, value, extra) => h("div", { class: "card" },
    h("div", { class: "label" }, label), h("div", { class: "value", "data-card": label }, value), extra);
  every(2000, async () => {
    let body;
    try { body = (await api("GET", "/api/v1/stats")).data; alert.clear(); }
    catch (problem) { alert.show(problem); throw problem; }
    const mine = body.user;
    const admin = body.broker;
    // Admins see the whole broker; everyone else what their own clients published and were sent.
    const counts = admin ? [admin.messages_received, admin.messages_sent] : [mine.messages_this_hour, mine.messages_sent];
    if (previous) {
      const seconds = Math.max(body.time - previous.time, 0.001);
      const rate = (now, before) => now === null ? null : Math.max(now - before, now < before ? now : 0) / seconds;
      history.push([rate(counts[0], previous.counts[0]), rate(counts[1], previous.counts[1])]);
      if (history.length > 60) history.shift();
    }
    previous = { time: body.time, counts };
    const quota = mine.messages_per_hour
      ? h("progress", { max: mine.messages_per_hour, value: mine.messages_this_hour, "aria-label": "Quota used this hour" })
      : null;
    cards.replaceChildren(
      card("Connected clients", admin ? `${mine.clients_connected} yours, ${admin.clients_connected} in all` : mine.clients_connected),
      card("Messages this hour", mine.messages_per_hour ? `${mine.messages_this_hour} of ${mine.messages_per_hour}` : `${mine.messages_this_hour} (no limit)`, quota),
      // Messages refused over the quota: MQTT 3.1.1 QoS 0 publishers get no answer, so this is where they show.
      ...(mine.messages_refused_this_hour ? [card("Refused over quota",
        `${mine.messages_refused_this_hour}, until ${new Date(mine.quota_resets_at * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}`)] : []),
      card("Uptime", duration(body.uptime_seconds)),
      card("Version", `Roost ${body.version}`),
    );
    drawChart(chart, history, !!admin);
  });
}

function drawChart(container, history, both) {
  const width = 600, height = 180, pad = 4;
  const values = history.flatMap(([a, b]) => [a, b]).filter((v) => v !== null);
  const top = Math.max(1, ...values) * 1.2;
  const path = (index) => history.map((point, i) => {
    const x = pad + (i * (width - 2 * pad)) / 59;
    const y = height - pad - ((point[index] || 0) * (height - 2 * pad)) / top;
    return `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
  }).join(" ");
  const last = history[history.length - 1] || [0, 0];
  const inText = both ? "in" : "published by your clients";
  const summary = `Messages per second, last two minutes: now ${(last[0] || 0).toFixed(1)} ${inText}` +
    (both ? `, ${(last[1] || 0).toFixed(1)} out` : "") + `. Scale up to ${top.toFixed(1)}.`;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", summary);
  for (let i = 1; i < 4; i++) {
    const line = document.createElementNS(ns, "line");
    const y = (height * i) / 4;
    Object.entries({ x1: 0, x2: width, y1: y, y2: y, class: "grid" }).forEach(([k, v]) => line.setAttribute(k, v));
    svg.append(line);
  }
  const series = both ? [["in", 0], ["out", 1]] : [["in", 0]];
  for (const [name, index] of series) {
    if (history.length < 2) break;
    const p = document.createElementNS(ns, "path");
    p.setAttribute("d", path(index));
    p.setAttribute("class", name);
    svg.append(p);
  }
  const legend = h("div", { class: "legend" },
    h("span", { class: "swatch-in" }, `${both ? "In" : "Published by your clients"}: ${(last[0] || 0).toFixed(1)}/s`),
    both && h("span", { class: "swatch-out" }, `Out: ${(last[1] || 0).toFixed(1)}/s`),
    h("span", { class: "muted" }, `scale 0–${top.toFixed(1)}/s`));
  container.replaceChildren(svg, legend);
}

async function instances() {
  const alert = viewAlert();
  const list = h("div");
  const created = h("div");
  const create = h("button", { type: "button", onclick: async () => {
    alert.clear();
    create.disabled = true;
    try {
      const instance = await api("POST", "/v1/mqtt");
      created.replaceChildren(h("div", { class: "notice", role: "region", "aria-label": "New instance" },
        h("p", {}, h("strong", {}, "Instance created. "), "Connect a client with these settings:"),
        credentials(instance)));
      announce("Instance created");
      await load();
    } catch (problem) { alert.show(problem); } finally { create.disabled = false; }
  } }, "Create instance");
  page("MQTT instances", h("p", { class: "muted" },
    "Each instance is a user name and password for MQTT clients, in your own namespace: your topics never meet anyone else's."),
    h("div", { class: "actions" }, create), alert, created, list);
  let clients = [];
  let rows = [];
  const clientCell = new Map();

  async function load() {
    const body = await api("GET", "/v1/mqtt?limit=1000");
    clientCell.clear();
    rows = body.mqtts.map((instance) => {
      const cell = h("td", { "data-clients-for": instance.user });
      clientCell.set(instance.user, cell);
      const details = h("div", { hidden: true });
      const show = h("button", { type: "button", class: "secondary", "aria-expanded": "false",
        "aria-label": `Show credentials of ${instance.user}`, onclick: () => {
          const open = details.hidden;
          details.hidden = !open;
          show.setAttribute("aria-expanded", String(open));
          show.textContent = open ? "Hide credentials" : "Show credentials";
          if (open && !details.firstChild) details.append(credentials(instance));
        } }, "Show credentials");
      const remove = h("button", { type: "button", class: "danger", "aria-label": `Delete instance ${instance.user}`,
        onclick: async () => {
          const yes = await confirmDialog(`Delete instance ${instance.user}?`,
            "This is irreversible. Its credentials stop working at once, every client using them is disconnected, " +
            "and the retained messages they published are removed.");
          if (!yes) { remove.focus(); return; }
          try {
            await api("DELETE", `/v1/mqtt/${encodeURIComponent(instance._id)}`);
            announce(`Instance ${instance.user} deleted`);
            created.replaceChildren();
            await load();
            create.focus();
          } catch (problem) { alert.show(problem); }
        } }, "Delete");
      return h("tr", { "data-instance": instance.user },
        h("td", {}, h("code", {}, instance.user)),
        h("td", {}, `${instance.server}:${instance.port}`),
        h("td", {}, when(instance.created_at)),
        cell,
        h("td", {}, h("div", { class: "actions" }, show, remove), details));
    });
    list.replaceChildren(table("Your MQTT instances", ["User", "Server", "Created", "Connected clients", "Actions"],
      rows, "No instance yet: create one to get MQTT credentials."));
    paintClients();
  }

  function paintClients() {
    for (const [user, cell] of clientCell) {
      const mine = clients.filter((c) => c.username === user);
      cell.replaceChildren(mine.length
        ? h("span", {}, h("span", { class: "badge online" }, `${mine.length} connected`), " ",
            h("span", { class: "muted" }, mine.map((c) => c.client_id || "(no id)").join(", ")))
        : h("span", { class: "badge offline" }, "none"));
    }
  }

  try { await load(); } catch (problem) { alert.show(problem); }
  every(2000, async () => { clients = (await api("GET", "/api/v1/clients")).data; paintClients(); });
}

function credentials(instance) {
  return secrets([["Server", instance.server], ["Port", String(instance.port)], ["User", instance.user],
                  ["Password", instance.password]]);
}

async function projects() {
  const alert = viewAlert();
  const list = h("div");
  const createForm = form({
    layout: "inline",
    fields: [{ name: "name", label: "Project name", required: true },
             { name: "description", label: "Description (optional)" }],
    submit: "Create project",
    onSubmit: async (values) => {
      await api("POST", "/api/v1/projects", { name: values.name, description: values.description || null });
      createForm.reset();
      announce("Project created");
      await load();
    },
  });
  page("Projects", alert, h("section", { class: "panel", "aria-label": "New project" }, createForm), list);
  async function load() {
    const first = await api("GET", "/api/v1/projects?page=1");  // the plan's limit comes with any page
    const body = { data: await everyPage("/api/v1/projects"), limits: first.limits };
    const limit = body.limits.max_projects;
    list.replaceChildren(
      h("p", { class: "muted" }, limit ? `${body.limits.current_projects} of ${limit} projects on your plan.` : `${body.limits.current_projects} projects.`),
      table("Your projects", ["Name", "Description", "Created", "Actions"], body.data.map((project) => {
        const remove = h("button", { type: "button", class: "danger", "aria-label": `Delete project ${project.name}`,
          onclick: async () => {
            if (!await confirmDialog(`Delete project ${project.name}?`,
              "This is irreversible: its devices (and their credentials), topics and stored messages are deleted too.")) return;
            try { await api("DELETE", `/api/v1/projects/${project.id}`); announce("Project deleted"); await load(); }
            catch (problem) { alert.show(problem); }
          } }, "Delete");
        return h("tr", {},
          h("td", {}, h("a", { href: `#/projects/${project.id}` }, project.name)),
          h("td", {}, project.description || ""),
          h("td", {}, when(project.created_at)),
          h("td", {}, h("div", { class: "actions" }, h("a", { href: `#/projects/${project.id}` }, "Devices and topics"), remove)));
      }), "No project yet."));
  }
  try { await load(); } catch (problem) { alert.show(problem); }
}

async function project(id) {
  const alert = viewAlert();
  let details;
  try { details = await api("GET", `/api/v1/projects/${id}`); }
  catch (problem) { page("Project"); main.append(alert); alert.show(problem); return; }
  const devices = h("div");
  const topics = h("div");
  const shown = h("div");
  const deviceForm = form({
    layout: "inline",
    fields: [{ name: "name", label: "Device name", required: true },
             { name: "device_id", label: "Device id", required: true, hint: "Unique across Roost; it is also the device's MQTT client id and user name." }],
    submit: "Add device",
    onSubmit: async (values) => {
      const body = await api("POST", "/api/v1/devices", { project_id: Number(id), name: values.name, device_id: values.device_id });
      deviceForm.reset();
      showOnce(body.data.mqtt_credentials, `Device ${body.data.device_id} added`);
      await loadDevices();
    },
  });
  const topicForm = form({
    layout: "inline",
    fields: [{ name: "name", label: "Topic", required: true, hint: "A topic or filter, such as home/+/temperature." },
             { name: "can_publish", label: "Devices may publish", type: "checkbox", value: true },
             { name: "can_subscribe", label: "Devices may subscribe", type: "checkbox", value: true }],
    submit: "Add topic",
    onSubmit: async (values) => {
      await api("POST", "/api/v1/topics", { project_id: Number(id), ...values });
      topicForm.reset();
      announce("Topic added");
      await loadTopics();
    },
  });
  page(`Project ${details.data.name}`, h("p", {}, h("a", { href: "#/projects" }, "← All projects")), alert,
    h("h2", {}, "Devices"), shown, h("section", { class: "panel", "aria-label": "New device" }, deviceForm), devices,
    h("h2", {}, "Topics and permissions"), h("section", { class: "panel", "aria-label": "New topic" }, topicForm), topics);

  function showOnce(creds, title) {
    shown.replaceChildren(h("div", { class: "notice", role: "region", "aria-label": "Device credentials" },
      h("p", {}, h("strong", {}, `${title}. `), "Save the password now: it will not be shown again."),
      secrets([["Client id", creds.client_id], ["User", creds.username], ["Password", creds.password]])));
    announce(`${title}. Save the password now.`);
  }

  async function loadDevices() {
    const body = { data: await everyPage(`/api/v1/devices?project_id=${id}`) };
    devices.replaceChildren(table("Devices", ["Name", "Device id", "Status", "Actions"], body.data.map((device) => {
      const rotate = h("button", { type: "button", class: "secondary", "aria-label": `New password for ${device.device_id}`,
        onclick: async () => {
          if (!await confirmDialog(`New password for ${device.device_id}?`,
            "The current password stops working at once and a connected device is disconnected.", "Make new password")) return;
          try { const r = await api("POST", `/api/v1/devices/${device.id}/credentials`); showOnce(r.data.mqtt_credentials, `New password for ${device.device_id}`); }
          catch (problem) { alert.show(problem); }
        } }, "New password");
      const remove = h("button", { type: "button", class: "danger", "aria-label": `Delete device ${device.device_id}`,
        onclick: async () => {
          if (!await confirmDialog(`Delete device ${device.device_id}?`, "This is irreversible: its credentials stop working and it is disconnected at once.")) return;
          try { await api("DELETE", `/api/v1/devices/${device.id}`); announce("Device deleted"); await loadDevices(); }
          catch (problem) { alert.show(problem); }
        } }, "Delete");
      return h("tr", { "data-device": device.device_id }, h("td", {}, device.name), h("td", {}, h("code", {}, device.device_id)),
        h("td", {}, h("span", { class: `badge ${device.status}`, "data-status": device.status }, device.status)),
        h("td", {}, h("div", { class: "actions" }, rotate, remove)));
    }), "No device yet."));
  }

  async function loadTopics() {
    const body = { data: await everyPage(`/api/v1/topics?project_id=${id}`) };
    topics.replaceChildren(table("Topics", ["Topic", "Devices may publish", "Devices may subscribe", "Actions"], body.data.map((topic) => {
      const toggle = (field, label) => {
        const box = h("input", { type: "checkbox", checked: topic[field], "aria-label": `${label}: ${topic.name}`,
          onchange: async () => {
            try { await api("PUT", `/api/v1/topics/${topic.id}`, { [field]: box.checked }); announce("Permission saved"); }
            catch (problem) { box.checked = !box.checked; alert.show(problem); }
          } });
        return box;
      };
      const remove = h("button", { type: "button", class: "danger", "aria-label": `Delete topic ${topic.name}`,
        onclick: async () => {
          if (!await confirmDialog(`Delete topic ${topic.name}?`, "This is irreversible: devices lose access to it at once.")) return;
          try { await api("DELETE", `/api/v1/topics/${topic.id}`); announce("Topic deleted"); await loadTopics(); }
          catch (problem) { alert.show(problem); }
        } }, "Delete");
      return h("tr", {}, h("td", {}, h("code", {}, topic.name)), h("td", {}, toggle("can_publish", "Devices may publish")),
        h("td", {}, toggle("can_subscribe", "Devices may subscribe")), h("td", {}, remove));
    }), "No topic yet: devices can reach only the topics listed here."));
  }

  try { await Promise.all([loadDevices(), loadTopics()]); } catch (problem) { alert.show(problem); }
  every(3000, loadDevices);  // online / offline as devices come and go
}

async function live() {
  const alert = viewAlert();
  const messages = h("ol", { class: "messages", "aria-live": "polite", "aria-relevant": "additions", "aria-label": "Messages" });
  const state = h("p", { class: "muted" }, "Not watching.");
  let source = null;
  const stop = () => { if (source) { source.close(); source = null; } };
  cleanups.push(stop);
  const watchForm = form({
    layout: "inline",
    fields: [{ name: "filter", label: "Topic filter", value: "#", hint: "In your own namespace, e.g. sensors/# or home/+/temperature." }],
    submit: "Watch",
    onSubmit: async (values) => {
      stop();
      const filter = values.filter.trim() || "#";
      // Ask once with fetch so a bad filter is explained next to the field; then stream.
      const check = await fetch(`/api/v1/live?filter=${encodeURIComponent(filter)}`, { headers: { Accept: "text/event-stream" } });
      if (!check.ok) {
        const body = await check.json().catch(() => ({}));
        throw new Problem(check.status, body.message || "", body.errors || {});
      }
      check.body.cancel();
      messages.replaceChildren();
      source = new EventSource(`/api/v1/live?filter=${encodeURIComponent(filter)}`);
      source.addEventListener("ready", () => { state.textContent = `Watching ${filter}`; state.dataset.state = "watching"; });
      source.addEventListener("message", (event) => {
        const m = JSON.parse(event.data);
        const payload = m.payload !== undefined ? m.payload : `(binary, base64) ${m.payload_base64}`;
        messages.prepend(h("li", {}, h("span", { class: "topic" }, m.topic),
          h("span", { class: "payload" }, payload),
          h("span", { class: "muted" }, `${new Date(m.time * 1000).toLocaleTimeString()} · QoS ${m.qos}${m.retain ? " · retained" : ""}`)));
        while (messages.children.length > 200) messages.lastChild.remove();
      });
      source.addEventListener("dropped", (event) => { state.textContent = `Watching ${filter} (${JSON.parse(event.data).count} messages skipped: too many to show)`; });
      source.onerror = () => { if (source && source.readyState === EventSource.CONNECTING) state.textContent = "Connection lost; trying again…"; };
    },
  });
  const publishArea = h("div");
  page("Live messages", alert, h("section", { class: "panel", "aria-label": "Watch" }, watchForm, state, messages),
    h("h2", {}, "Publish a test message"), publishArea);
  // Publishing goes through the REST API, which publishes to a project's topic.
  try {
    const all = await everyPage("/api/v1/projects");
    const choices = [];
    for (const p of all) {
      for (const t of await everyPage(`/api/v1/topics?project_id=${p.id}`)) {
        if (!t.name.includes("+") && !t.name.includes("#")) choices.push([`${p.id}:${t.id}`, `${t.name} (${p.name})`]);
      }
    }
    if (!choices.length) {
      publishArea.replaceChildren(h("p", { class: "muted" }, "To publish from here, add a topic (without wildcards) to a project first: ",
        h("a", { href: "#/projects" }, "Projects"), "."));
    } else {
      const publishForm = form({
        fields: [{ name: "topic_id", label: "Topic", type: "select", options: choices },
                 { name: "payload", label: "Payload", type: "textarea" },
                 { name: "qos", label: "QoS", type: "select", options: [["0", "0: at most once"], ["1", "1: at least once"], ["2", "2: exactly once"]] },
                 { name: "retained", label: "Retain", type: "checkbox" }],
        submit: "Publish",
        onSubmit: async (values) => {
          const [projectId, topicId] = values.topic_id.split(":").map(Number);
          await api("POST", "/api/v1/messages", { project_id: projectId, topic_id: topicId, payload: values.payload,
                                                  qos: Number(values.qos), retained: values.retained });
          announce("Message published");
        },
      });
      publishArea.replaceChildren(h("section", { class: "panel", "aria-label": "Publish" }, publishForm));
    }
  } catch (problem) { alert.show(problem); }
}

async function apiKeys() {
  const alert = viewAlert();
  const list = h("div");
  const shown = h("div");
  const createForm = form({
    layout: "inline",
    fields: [{ name: "name", label: "Key name", required: true },
             { name: "expires_at", label: "Expires on (optional)", type: "date" }],
    submit: "Create key",
    onSubmit: async (values) => {
      const body = (await api("POST", "/api/v1/api-keys", { name: values.name, expires_at: values.expires_at || null })).data;
      createForm.reset();
      shown.replaceChildren(h("div", { class: "notice", role: "region", "aria-label": "New API key" },
        h("p", {}, h("strong", {}, "Key created. "), "Save the key and secret now: they will not be shown again."),
        secrets([["Key", body.key], ["Secret", body.secret]])));
      announce("API key created. Save the key and secret now.");
      await load();
    },
  });
  page("API keys", h("p", { class: "muted" }, "Use a key with the REST API: ", h("code", {}, "Authorization: Bearer <key>"), "."),
    alert, h("section", { class: "panel", "aria-label": "New API key" }, createForm), shown, list);
  async function load() {
    const body = { data: await everyPage("/api/v1/api-keys") };
    list.replaceChildren(table("Your API keys", ["Name", "Key", "State", "Last used", "Expires", "Actions"], body.data.map((key) => {
      const revoke = key.is_active && h("button", { type: "button", class: "danger", "aria-label": `Revoke key ${key.name}`,
        onclick: async () => {
          if (!await confirmDialog(`Revoke key ${key.name}?`, "This is irreversible: programs using it are refused from now on.", "Revoke")) return;
          try { await api("POST", `/api/v1/api-keys/${key.id}/deactivate`); announce("Key revoked"); await load(); }
          catch (problem) { alert.show(problem); }
        } }, "Revoke");
      const remove = h("button", { type: "button", class: "danger", "aria-label": `Delete key ${key.name}`,
        onclick: async () => {
          if (!await confirmDialog(`Delete key ${key.name}?`, "This is irreversible.")) return;
          try { await api("DELETE", `/api/v1/api-keys/${key.id}`); announce("Key deleted"); await load(); }
          catch (problem) { alert.show(problem); }
        } }, "Delete");
      return h("tr", { "data-key": key.name }, h("td", {}, key.name), h("td", {}, h("code", {}, key.key)),
        h("td", { "data-state": key.is_active ? "active" : "revoked" }, key.is_active ? "active" : "revoked"),
        h("td", {}, when(key.last_used_at)), h("td", {}, key.expires_at ? when(key.expires_at) : "never"),
        h("td", {}, h("div", { class: "actions" }, revoke, remove)));
    }), "No API key."));
  }
  try { await load(); } catch (problem) { alert.show(problem); }
}

const PLANS = ["free", "starter", "professional", "enterprise"];

async function users() {
  const alert = viewAlert();
  const list = h("div");
  const shown = h("div");
  const createForm = form({
    fields: [{ name: "name", label: "User name", required: true },
             { name: "password", label: "Dashboard password (optional)", type: "password", autocomplete: "new-password", hint: "At least 8 characters." },
             { name: "plan", label: "Plan", value: "free", list: "plans" },
             { name: "is_admin", label: "Administrator", type: "checkbox" }],
    submit: "Create user",
    onSubmit: async (values) => {
      const body = (await api("POST", "/api/v1/users", { name: values.name, password: values.password || null,
                                                         plan: values.plan, is_admin: values.is_admin })).data;
      createForm.reset();
      shown.replaceChildren(h("div", { class: "notice", role: "region", "aria-label": "New user" },
        h("p", {}, h("strong", {}, `User ${body.name} created. `), "Their first API key and secret are shown once:"),
        secrets([["Key", body.api_key], ["Secret", body.secret]])));
      await load();
    },
  });
  page("Users and plans", alert, h("datalist", { id: "plans" }, PLANS.map((p) => h("option", { value: p }))),
    h("section", { class: "panel", "aria-label": "New user" }, createForm), shown, list);
  async function load() {
    const body = { data: await everyPage("/api/v1/users") };
    list.replaceChildren(table("Users", ["Name", "Plan", "Active", "Administrator", "Actions"], body.data.map((user) => {
      const planForm = form({ layout: "inline", fields: [{ name: "plan", label: `Plan of ${user.name}`, value: user.plan, list: "plans" }],
        submit: "Save plan",
        onSubmit: async (values) => { await api("PUT", `/api/v1/users/${user.id}`, { plan: values.plan }); announce("Plan saved"); } });
      const active = h("input", { type: "checkbox", checked: user.is_active, "aria-label": `${user.name} is active`,
        onchange: async () => {
          try { await api("PUT", `/api/v1/users/${user.id}`, { is_active: active.checked }); announce(active.checked ? "User activated" : "User deactivated"); }
          catch (problem) { active.checked = !active.checked; alert.show(problem); }
        } });
      const remove = user.id !== session.user.id && h("button", { type: "button", class: "danger", "aria-label": `Delete user ${user.name}`,
        onclick: async () => {
          if (!await confirmDialog(`Delete user ${user.name}?`, "This is irreversible: everything they own is deleted and their clients are disconnected.")) return;
          try { await api("DELETE", `/api/v1/users/${user.id}`); announce("User deleted"); await load(); }
          catch (problem) { alert.show(problem); }
        } }, "Delete");
      return h("tr", {}, h("td", {}, user.name), h("td", {}, planForm), h("td", {}, active),
        h("td", {}, user.is_admin ? "yes" : "no"), h("td", {}, remove));
    }), "No user."));
  }
  try { await load(); } catch (problem) { alert.show(problem); }
}

async function clients() {
  const alert = viewAlert();
  const list = h("div");
  page("Connected clients", h("p", { class: "muted" }, "Every tenant's connected MQTT clients, refreshed every few seconds."), alert, list);
  every(2000, async () => {
    const body = await api("GET", "/api/v1/clients");
    list.replaceChildren(table("Connected clients", ["Client id", "User name", "Tenant", "Address", "Since", "Actions"], body.data.map((c) => {
      const kick = h("button", { type: "button", class: "danger", "aria-label": `Kick ${c.client_id || c.username}`,
        onclick: async () => {
          if (!await confirmDialog(`Kick ${c.client_id}?`, "It is disconnected now and its session ends; it may connect again.", "Kick")) return;
          try { await api("POST", `/api/v1/clients/${c.id}/kick`); announce("Client disconnected"); }
          catch (problem) { alert.show(problem); }
        } }, "Kick");
      return h("tr", { "data-client": c.client_id }, h("td", {}, h("code", {}, c.client_id)), h("td", {}, c.username || "(anonymous)"),
        h("td", {}, c.user_name || "(none)"), h("td", {}, c.remote_address), h("td", {}, when(c.connected_at)), h("td", {}, kick));
    }), "No client is connected."));
  });
}

// -- signing in and out, navigation --------------------------------------------------------------------

function signInView(message) {
  nav.hidden = true;
  document.getElementById("account").hidden = true;
  const signIn = form({
    fields: [{ name: "name", label: "User name", required: true, autocomplete: "username" },
             { name: "password", label: "Password", type: "password", required: true, autocomplete: "current-password" }],
    submit: "Sign in",
    onSubmit: async (values) => {
      try {
        const body = await api("POST", "/dashboard/session", values);
        signedIn(body.data);
      } catch (problem) {
        if (problem.status === 401) problem.fields = { password: "The user name or password is not right." };
        else if (problem.status === 429) problem.fields = { password: problem.message };
        throw problem;
      }
    },
  });
  document.title = "Sign in · Roost dashboard";
  const heading = h("h1", { tabindex: "-1" }, "Sign in to Roost");
  main.replaceChildren(h("div", { class: "signin panel" }, heading,
    message && h("p", { class: "alert", role: "alert" }, message), signIn,
    h("p", { class: "hint" }, "Accounts come from ", h("code", {}, "roost user add NAME --password-stdin"), " or an administrator.")));
  signIn.inputs.name.focus();
}

const VIEWS = [
  ["#/", "Overview", overview],
  ["#/instances", "Instances", instances],
  ["#/projects", "Projects", projects],
  ["#/live", "Live messages", live],
  ["#/api-keys", "API keys", apiKeys],
  ["#/admin/users", "Users", users, true],
  ["#/admin/clients", "Clients", clients, true],
];

function signedIn(data) {
  session.user = data.user;
  session.csrf = data.csrf_token;
  document.getElementById("who").textContent = `${data.user.name}${data.user.is_admin ? " (admin)" : ""}`;
  document.getElementById("account").hidden = false;
  nav.replaceChildren(...VIEWS.filter((v) => !v[3] || data.user.is_admin).map(([href, label]) => h("a", { href }, label)));
  nav.hidden = false;
  route(true);
}

function signedOut(message) {
  for (const stop of cleanups) stop();
  cleanups = [];
  session.user = null;
  session.csrf = null;
  signInView(message);
}

async function route(focus = true) {
  if (!session.user) return;
  for (const stop of cleanups) stop();
  cleanups = [];
  const hash = location.hash || "#/";
  for (const link of nav.querySelectorAll("a")) {
    const href = link.getAttribute("href");
    const current = href === "#/" ? hash === "#/" : hash.startsWith(href);
    if (current) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  const projectMatch = hash.match(/^#\/projects\/(\d+)$/);
  const view = VIEWS.find(([href, , , admin]) => href === hash && (!admin || session.user.is_admin));
  if (projectMatch) await project(projectMatch[1]);
  else if (view) await view[2]();
  else page("Not found", h("p", {}, "There is no such page. ", h("a", { href: "#/" }, "Go to the overview"), "."));
  if (focus) main.querySelector("h1")?.focus();
}

document.getElementById("sign-out").addEventListener("click", async () => {
  try { await api("DELETE", "/dashboard/session"); } catch { /* signed out either way */ }
  history.replaceState(null, "", "#/");
  signedOut("You are signed out.");
});

window.addEventListener("hashchange", () => route(true));

(async () => {
  try {
    const body = await api("GET", "/dashboard/session");
    signedIn(body.data);
  } catch {
    signInView(null);
  }
})();
