// Charts with a time axis: SVG drawn from points the caller gives ([time in seconds, value...]), over a
// fixed window that ends now, so a line starts where its data starts (at the right, for a fresh page)
// instead of stretching from the left edge. The server keeps the last hour (GET /api/v1/stats/history),
// so a reload shows the history. No library: a few SVG elements, labelled for screen readers.

const NS = "http://www.w3.org/2000/svg";
const W = 640, H = 200, LEFT = 48, RIGHT = 8, TOP = 8, BOTTOM = 26;

function el(tag, attrs, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// A round step for about `n` ticks between 0 and max (1, 2 or 5 times a power of ten).
function niceStep(max, n) {
  const raw = max / n;
  const power = 10 ** Math.floor(Math.log10(raw || 1));
  return [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) || power * 10;
}

function fmt(value) {
  if (value >= 1000) return `${(value / 1000).toFixed(value >= 10000 ? 0 : 1)}k`;
  return Number.isInteger(value) ? String(value) : value.toFixed(value < 10 ? 1 : 0);
}

function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

// series: [{name, label, cls, values: [[time, value], ...]}]; span: seconds shown, ending at `now`.
export function timeChart({ title, perSecond = true, series, span, now }) {
  const end = now, start = end - span;
  const values = series.flatMap((s) => s.values.map(([, v]) => v)).filter((v) => v !== null && isFinite(v));
  const step = niceStep(Math.max(1, ...values), 4);
  const top = step * Math.max(1, Math.ceil(Math.max(1, ...values) / step));
  const x = (t) => LEFT + ((t - start) * (W - LEFT - RIGHT)) / span;
  const y = (v) => H - BOTTOM - (v * (H - TOP - BOTTOM)) / top;
  const latest = series.map((s) => (s.values.length ? s.values[s.values.length - 1][1] : null));
  const summary = `${title}, last ${Math.round(span / 60)} minutes: ` +
    series.map((s, i) => `${s.label} now ${latest[i] === null ? "no data" : fmt(latest[i])}`).join(", ") +
    `. Scale 0 to ${fmt(top)}.`;
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": summary, class: "timechart" });
  for (let v = 0; v <= top + 1e-9; v += step) {
    svg.append(el("line", { x1: LEFT, x2: W - RIGHT, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(el("text", { x: LEFT - 6, y: y(v) + 4, class: "tick", "text-anchor": "end" }, fmt(v)));
  }
  // Time ticks on round minutes: every 10 minutes for an hour, every 30 s for a few minutes.
  const tickEvery = span > 1200 ? 600 : span > 300 ? 120 : 30;
  for (let t = Math.ceil(start / tickEvery) * tickEvery; t <= end; t += tickEvery) {
    svg.append(el("line", { x1: x(t), x2: x(t), y1: H - BOTTOM, y2: H - BOTTOM + 4, class: "axis" }));
    const label = tickEvery < 60 ? new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" }) : clock(t);
    svg.append(el("text", { x: x(t), y: H - 6, class: "tick", "text-anchor": "middle" }, label));
  }
  svg.append(el("line", { x1: LEFT, x2: W - RIGHT, y1: H - BOTTOM, y2: H - BOTTOM, class: "axis" }));
  for (const s of series) {
    const shown = s.values.filter(([t, v]) => t >= start && v !== null);
    if (shown.length === 1) svg.append(el("circle", { cx: x(shown[0][0]), cy: y(shown[0][1]), r: 3, class: `dot ${s.cls}` }));
    if (shown.length < 2) continue;
    const d = shown.map(([t, v], i) => `${i ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    svg.append(el("path", { d, class: `line ${s.cls}` }));
  }
  const legend = document.createElement("div");
  legend.className = "legend";
  series.forEach((s, i) => {
    const item = document.createElement("span");
    item.className = `swatch ${s.cls}`;
    item.textContent = `${s.label}: ${latest[i] === null ? "–" : fmt(latest[i])}${perSecond ? "/s" : ""}`;
    legend.append(item);
  });
  const figure = document.createElement("figure");
  figure.className = "chart panel";
  const caption = document.createElement("figcaption");
  caption.textContent = title;
  figure.append(caption, svg, legend);
  return figure;
}

// The Charts page: the server's last hour (administrators: the broker's; users: their own namespace's,
// without drops, which are not counted per tenant), redrawn every interval.
export async function chartsView(ui) {
  const { h, api, page, viewAlert, every, session } = ui;
  const admin = session.user.is_admin;
  const alert = viewAlert();
  const area = h("div", { class: "charts" });
  const note = h("p", { class: "muted" }, admin
    ? "The whole broker's last hour, kept by Roost (one point every 10 seconds): a reload keeps the history."
    : "Your clients' last hour, kept by Roost (one point every 10 seconds): a reload keeps the history.");
  page("Charts", note, alert, area);
  every(10000, async () => {
    let body;
    try { body = (await api("GET", "/api/v1/stats/history")).data; alert.clear(); }
    catch (problem) { alert.show(problem); throw problem; }
    const points = body.points;
    const now = points.length ? Math.max(points[points.length - 1].time, Date.now() / 1000) : Date.now() / 1000;
    const pick = (key) => points.map((p) => [p.time, p[key]]);
    area.replaceChildren(...[
      timeChart({ title: "Messages per second", span: body.span, now, series: [
        { label: "In", cls: "s1", values: pick("messages_in") },
        { label: "Out", cls: "s2", values: pick("messages_out") }] }),
      timeChart({ title: "Connected clients", perSecond: false, span: body.span, now, series: [
        { label: "Connected", cls: "s1", values: pick("connections") }] }),
      admin && timeChart({ title: "Dropped messages per second", span: body.span, now, series: [
        { label: "Dropped", cls: "s3", values: pick("dropped") }] }),
    ].filter(Boolean));
  });
}
