// The broker console: Clients, Subscriptions, Retained messages, Events and Bridges. Every list comes one
// page at a time from the server (/api/v1/clients, /subscriptions, /shared-subscriptions, /retained,
// /events), so a broker with 10,000 clients or 100,000 subscriptions draws 50 rows, never all of them.
// The views get the page's helpers as `ui` (see app.js); untrusted text is only ever set as textContent.

const PER_PAGE = 50;

// A list with a search box and Previous / Next: `load(page, text)` returns the API's body.
function pagedList(ui, { label, placeholder, render, load, extra = [] }) {
  const { h, viewAlert } = ui;
  const alert = viewAlert();
  const body = h("div");
  const status = h("p", { class: "muted pager-status", "aria-live": "polite" });
  const search = h("input", { type: "search", id: `${label}-q`.replace(/\W+/g, "-"), placeholder, autocomplete: "off" });
  let current = 1;
  let text = "";
  const prev = h("button", { type: "button", class: "secondary", onclick: () => go(current - 1) }, "Previous page");
  const next = h("button", { type: "button", class: "secondary", onclick: () => go(current + 1) }, "Next page");
  const form = h("form", { class: "inline", role: "search", "aria-label": `Search ${label}`,
    onsubmit: (event) => { event.preventDefault(); text = search.value.trim(); go(1); } },
    h("div", { class: "field" }, h("label", { for: search.id }, `Filter ${label}`), search),
    ...extra, h("div", { class: "actions" }, h("button", { type: "submit" }, "Filter")));
  async function go(page) {
    try {
      const answer = await load(page, text);
      alert.clear();
      current = page;
      const p = answer.pagination;
      body.replaceChildren(render(answer.data, answer));
      const first = (p.current_page - 1) * p.per_page + (answer.data.length ? 1 : 0);
      const last = (p.current_page - 1) * p.per_page + answer.data.length;
      status.textContent = p.total === null
        ? `Showing ${first}–${last}${p.more ? ", more on the next page" : ""}.`
        : `Showing ${first}–${last} of ${p.total}.`;
      prev.disabled = current <= 1;
      next.disabled = !p.more;
    } catch (problem) { alert.show(problem); }
  }
  const node = h("section", { class: "paged", "aria-label": label }, form, alert, body,
    h("div", { class: "actions pager" }, prev, next, status));
  node.reload = () => go(current);
  node.start = () => go(1);
  node.searchInput = search;
  return node;
}

function query(path, params) {
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== undefined && v !== null) search.set(k, v);
  return `${path}?${search}`;
}

function age(seconds) {
  if (seconds < 60) return `${Math.floor(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ${Math.floor(seconds / 60) % 60} min`;
  return `${Math.floor(seconds / 86400)} d`;
}

function bytes(n) {
  return n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KB` : `${(n / 1048576).toFixed(1)} MB`;
}

// A payload preview from the server ({format, size, text, truncated}): text, pretty JSON, or hex.
export function payloadView(h, preview) {
  const labels = { text: "text", json: "JSON", binary: "binary, hex", empty: "empty" };
  const note = `${labels[preview.format]} · ${bytes(preview.size)}${preview.truncated ? " · beginning shown" : ""}`;
  return h("div", { class: "payload-view" },
    h("pre", { class: `payload ${preview.format}`, "data-format": preview.format }, preview.text || "(empty)"),
    h("span", { class: "muted payload-note" }, note));
}

// A modal asking for a reason (optional) before an action; resolves the reason, or null when cancelled.
function reasonDialog(ui, title, message, action) {
  const { h, nextId } = ui;
  return new Promise((resolve) => {
    const titleId = nextId("dialog-title");
    const inputId = nextId("reason");
    const input = h("input", { id: inputId, maxlength: "200", autocomplete: "off" });
    const cancel = h("button", { type: "button", class: "secondary" }, "Cancel");
    const ok = h("button", { type: "submit", class: "danger solid" }, action);
    const form = h("form", { method: "dialog", class: "stack" }, h("p", {}, message),
      h("div", { class: "field" }, h("label", { for: inputId }, "Reason (optional, kept in the event log)"), input),
      h("div", { class: "actions" }, cancel, ok));
    const dialog = h("dialog", { "aria-labelledby": titleId }, h("h2", { id: titleId }, title), form);
    const done = (answer) => { dialog.close(); dialog.remove(); resolve(answer); };
    cancel.addEventListener("click", () => done(null));
    form.addEventListener("submit", (event) => { event.preventDefault(); done(input.value.trim()); });
    dialog.addEventListener("cancel", (event) => { event.preventDefault(); done(null); });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}

export async function clientsView(ui) {
  const { h, api, page, table, when, announce, every, session } = ui;
  const admin = session.user.is_admin;
  const list = pagedList(ui, {
    label: "clients", placeholder: "client id, user name or address",
    load: (n, q) => api("GET", query("/api/v1/clients", { page: n, per_page: PER_PAGE, q })),
    render: (rows) => table("Connected clients",
      ["Client id", "User", ...(admin ? ["Tenant"] : []), "Protocol", "Address", "Keep alive", "Since",
       "Subscriptions", "In flight / queued", "Messages in / out", "Actions"],
      rows.map((c) => {
        const name = c.client_id || c.username || "(no id)";
        const kick = h("button", { type: "button", class: "danger", "aria-label": `Kick ${name}`, onclick: async () => {
          const reason = await reasonDialog(ui, `Kick ${name}?`,
            "It is disconnected now and its session ends (MQTT 5 clients hear reason 0x98, administrative action); it may connect again.", "Kick");
          if (reason === null) { kick.focus(); return; }
          try { await api("POST", `/api/v1/clients/${c.id}/kick`, reason ? { reason } : {}); announce(`${name} disconnected`); list.reload(); }
          catch (problem) { list.querySelector(".alert").textContent = ui.explain(problem); }
        } }, "Kick");
        return h("tr", { "data-client": c.client_id },
          h("td", {}, h("code", {}, c.client_id)), h("td", {}, c.username || "(anonymous)"),
          admin && h("td", {}, c.user_name || "(none)"),
          h("td", {}, `MQTT ${c.protocol_version === 5 ? "5.0" : c.protocol_version === 4 ? "3.1.1" : "3.1"}`),
          h("td", {}, c.remote_address, " ", h("span", { class: `badge ${c.tls ? "online" : "offline"}` }, c.tls ? "TLS" : c.listener === "ws" ? "WebSocket" : "plain")),
          h("td", {}, c.keep_alive ? `${c.keep_alive} s` : "off"), h("td", {}, when(c.connected_at)),
          h("td", {}, String(c.subscriptions)), h("td", {}, `${c.inflight} / ${c.queued}`),
          h("td", {}, `${c.messages_in} / ${c.messages_out}`), h("td", {}, kick));
      }), "No client is connected."),
  });
  page("Connected clients", h("p", { class: "muted" }, admin
    ? "Every tenant's connected MQTT clients, 50 to a page, refreshed every few seconds."
    : "Your connected MQTT clients, 50 to a page, refreshed every few seconds."), list);
  await list.start();
  every(5000, async () => { if (!document.querySelector("dialog")) await list.reload(); });
}

export async function subscriptionsView(ui) {
  const { h, api, page, table, session } = ui;
  const admin = session.user.is_admin;
  const subscriptions = pagedList(ui, {
    label: "subscriptions", placeholder: "topic filter or client id",
    load: (n, q) => api("GET", query("/api/v1/subscriptions", { page: n, per_page: PER_PAGE, q })),
    render: (rows) => table("Subscriptions", ["Topic filter", "QoS", "Options", "Client", ...(admin ? ["Tenant"] : []), "State"],
      rows.map((s) => h("tr", { "data-filter": s.topic_filter },
        h("td", {}, h("code", {}, s.topic_filter)), h("td", {}, String(s.qos)),
        h("td", {}, [s.no_local && "no local", s.retain_as_published && "retain as published",
          `retain handling ${s.retain_handling}`, s.subscription_id !== null && `id ${s.subscription_id}`,
          s.share_group && `shared (${s.share_group})`].filter(Boolean).join(", ")),
        h("td", {}, h("code", {}, s.client_id)), admin && h("td", {}, s.tenant || "(none)"),
        h("td", {}, h("span", { class: `badge ${s.online ? "online" : "offline"}` }, s.online ? "online" : "offline")))),
      "No subscription."),
  });
  const groups = h("div");
  async function loadGroups(n = 1) {
    const body = await api("GET", query("/api/v1/shared-subscriptions", { page: n, per_page: PER_PAGE }));
    groups.replaceChildren(table("Shared groups", ["Group", "Topic filter", ...(admin ? ["Tenant"] : []), "Members"],
      body.data.map((g) => h("tr", { "data-group": g.group },
        h("td", {}, h("code", {}, g.group)), h("td", {}, h("code", {}, g.topic_filter)), admin && h("td", {}, g.tenant || "(none)"),
        h("td", {}, `${g.members.length} (${g.online} online): `, h("span", { class: "muted" }, g.members.join(", "))))),
      "No shared subscription."),
      h("p", { class: "muted" }, `${body.pagination.total} group${body.pagination.total === 1 ? "" : "s"}.`));
  }
  page("Subscriptions", h("p", { class: "muted" }, "Topic filters held by sessions, connected or not, 50 to a page."),
    subscriptions, h("h2", {}, "Shared groups"), h("p", { class: "muted" }, "Each message on a shared filter goes to one member of its group."), groups);
  await Promise.all([subscriptions.start(), loadGroups()]);
}

export async function retainedView(ui) {
  const { h, api, page, table, announce, confirmDialog, session } = ui;
  const admin = session.user.is_admin;
  let filter = "#";
  const list = pagedList(ui, {
    label: "retained messages", placeholder: admin ? "# (every tenant), sensors/#, $u3/#" : "sensors/# or home/+/temperature",
    load: (n, q) => { filter = q || "#"; return api("GET", query("/api/v1/retained", { page: n, per_page: 20, filter })); },
    extra: [],
    render: (rows) => h("div", {},
      h("div", { class: "actions" }, h("button", { type: "button", class: "danger", disabled: !rows.length, onclick: () => remove(filter, true) },
        `Delete all under ${filter}`)),
      table("Retained messages", ["Topic", ...(admin ? ["Tenant"] : []), "Payload", "QoS", "Age", "Actions"],
        rows.map((r) => h("tr", { "data-topic": r.topic },
          h("td", {}, h("code", {}, r.topic)), admin && h("td", {}, r.tenant || "(none)"),
          h("td", { class: "payload-cell" }, payloadView(h, r.payload)), h("td", {}, String(r.qos)),
          h("td", {}, age(r.age_seconds)),
          h("td", {}, h("button", { type: "button", class: "danger", "aria-label": `Delete retained ${r.topic}`,
            onclick: () => remove(r.topic, false) }, "Delete")))),
        "No retained message on this filter.")),
  });
  list.searchInput.value = "#";
  async function remove(target, all) {
    const yes = await confirmDialog(all ? `Delete every retained message under ${target}?` : `Delete the retained message of ${target}?`,
      all ? "This is irreversible: every retained message matching the filter is removed; new subscribers will not get them."
          : "This is irreversible: new subscribers to this topic will not get it.");
    if (!yes) return;
    try {
      const body = await api("DELETE", query("/api/v1/retained", { filter: target }));
      announce(body.message);
      list.querySelector(".pager-status").textContent = body.message;
      await list.reload();
    } catch (problem) { list.querySelector(".alert").textContent = ui.explain(problem); }
  }
  page("Retained messages", h("p", { class: "muted" },
    "Browse by topic filter. Payloads show as text, JSON (pretty-printed) or hex for binary; long ones are cut."), list);
  await list.start();
}

const KIND_WORDS = { connected: "Connected", refused: "Refused", disconnected: "Disconnected", kicked: "Kicked" };

export async function eventsView(ui) {
  const { h, api, page, table, every, nextId, session } = ui;
  const admin = session.user.is_admin;
  const kindId = nextId("kind");
  const kind = h("select", { id: kindId }, h("option", { value: "" }, "All"),
    Object.entries(KIND_WORDS).map(([value, text]) => h("option", { value }, text)));
  const list = pagedList(ui, {
    label: "events", placeholder: "client id, user, address or reason",
    extra: [h("div", { class: "field" }, h("label", { for: kindId }, "Kind"), kind)],
    load: (n, q) => api("GET", query("/api/v1/events", { page: n, per_page: PER_PAGE, q, kind: kind.value })),
    render: (rows) => table("Events", ["Time", "Event", "Client", "User", ...(admin ? ["Tenant"] : []), "Address", "Reason", "Detail"],
      rows.map((e) => h("tr", { "data-kind": e.kind },
        h("td", {}, new Date(e.time * 1000).toLocaleString()), h("td", {}, h("span", { class: `badge ${e.kind}` }, KIND_WORDS[e.kind])),
        h("td", {}, h("code", {}, e.client_id || "(none)")), h("td", {}, e.username || ""), admin && h("td", {}, e.tenant || "(none)"),
        h("td", {}, e.address), h("td", {}, e.reason ? `${e.reason}${e.reason_code !== null ? ` (0x${e.reason_code.toString(16).padStart(2, "0")})` : ""}` : ""),
        h("td", {}, e.detail))), "No event."),
  });
  kind.addEventListener("change", () => list.start());
  page("Events", h("p", { class: "muted" }, admin
    ? "The last few hundred connections, refusals, disconnections and kicks (the broker keeps 500), newest first."
    : "Your clients' last connections, disconnections and kicks, newest first."), list);
  await list.start();
  every(5000, () => list.reload());
}

// GET /api/v1/bridges gives the backlog as an object (control/api/bridges.py): messages waiting in the
// outbox, their bytes, and QoS 0 messages held in memory while the link is down.
function backlogText(backlog) {
  if (!backlog) return "";
  const messages = backlog.messages + (backlog.qos0_queued || 0);
  return `${messages} message${messages === 1 ? "" : "s"}${backlog.bytes ? ` (${backlog.bytes} B)` : ""}`;
}

// Where a bridge's link is: the address (MQTT) or server (NATS) it is connected to, and a NATS stream.
function upstreamText(bridge) {
  const where = bridge.connected_to || "not connected";
  return bridge.stream ? `${where} (stream ${bridge.stream})` : where;
}

export async function bridgesView(ui) {
  const { h, api, page, table, viewAlert } = ui;
  const alert = viewAlert();
  const body = h("div");
  page("Bridges", h("p", { class: "muted" }, "Links from this broker to upstream brokers."), alert, body);
  let bridges = [];
  try { bridges = (await api("GET", "/api/v1/bridges")).data || []; }
  catch (problem) { if (problem.status !== 404) { alert.show(problem); return; } }
  body.replaceChildren(bridges.length
    ? table("Bridges", ["Name", "State", "Connected to", "Backlog", "Last error"], bridges.map((b) => h("tr", {},
        h("td", {}, b.name), h("td", {}, b.state), h("td", {}, upstreamText(b)), h("td", {}, backlogText(b.backlog)),
        h("td", {}, b.last_error || ""))), "")
    : h("p", { class: "notice" }, "No bridges configured."));
}
