// The MQTT client page: a test client inside the page, over Roost's own WebSocket endpoint (/mqtt on this
// origin), signed in with one of the user's MQTT instances. The client library is MQTT.js, vendored in
// vendor/mqtt.min.js (see vendor/README.md for its version and licence) and loaded only on this page.

let loading = null;

function loadMqttJs() {
  if (window.mqtt) return Promise.resolve(window.mqtt);
  if (!loading) {
    loading = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = "/dashboard/static/vendor/mqtt.min.js";
      script.onload = () => resolve(window.mqtt);
      script.onerror = () => { loading = null; reject(new Error("MQTT.js did not load")); };
      document.head.append(script);
    });
  }
  return loading;
}

const decoder = new TextDecoder("utf-8", { fatal: true });

// The same rules as the server's previews (control/api/payloads.py): text, pretty JSON, or hex.
function preview(bytes) {
  let text;
  try {
    text = decoder.decode(bytes);
    if (/[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/.test(text)) throw new Error("control characters");
  } catch {
    const shown = Array.from(bytes.slice(0, 256), (b) => b.toString(16).padStart(2, "0")).join(" ");
    return { format: "binary", size: bytes.length, text: shown, truncated: bytes.length > 256 };
  }
  let format = bytes.length ? "text" : "empty";
  if (/^\s*[[{]/.test(text)) {
    try { text = JSON.stringify(JSON.parse(text), null, 2); format = "json"; } catch { /* just text */ }
  }
  return { format, size: bytes.length, text: text.slice(0, 2048), truncated: text.length > 2048 };
}

export async function mqttClientView(ui, payloadView) {
  const { h, api, page, form, announce, viewAlert, onLeave, nextId } = ui;
  const alert = viewAlert();
  const state = h("p", { class: "state", "data-state": "disconnected", role: "status" }, "Not connected.");
  const messages = h("ol", { class: "messages", "aria-label": "Received messages" });
  const subscriptions = h("ul", { class: "subs", "aria-label": "Subscriptions" });
  const published = h("div", { "aria-live": "polite" });
  let client = null;
  const end = () => { if (client) { client.end(); client = null; } };  // with a DISCONNECT: a normal end
  onLeave(end);

  let instances = [];
  try { instances = (await api("GET", "/v1/mqtt?limit=1000")).mqtts; } catch (problem) { alert.show(problem); }
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = `${scheme}://${location.host}/mqtt`;

  const connectForm = form({
    layout: "inline",
    fields: [
      instances.length
        ? { name: "instance", label: "Instance", type: "select", options: instances.map((i) => [i.user, i.user]) }
        : { name: "instance", label: "Instance user name", required: true },
      ...(instances.length ? [] : [{ name: "password", label: "Instance password", type: "password", autocomplete: "off" }]),
      { name: "client_id", label: "Client id", value: `dashboard-${Math.random().toString(36).slice(2, 8)}` },
      { name: "version", label: "Protocol", type: "select", options: [["5", "MQTT 5.0"], ["4", "MQTT 3.1.1"]] },
    ],
    submit: "Connect",
    onSubmit: async (values) => {
      end();
      const mqtt = await loadMqttJs();
      const chosen = instances.find((i) => i.user === values.instance);
      const password = chosen ? chosen.password : values.password;
      state.textContent = `Connecting to ${url}…`;
      state.dataset.state = "connecting";
      client = mqtt.connect(url, { username: values.instance, password, clientId: values.client_id,
                                   protocolVersion: Number(values.version), reconnectPeriod: 0, clean: true,
                                   connectTimeout: 10000 });
      const mine = client;
      mine.on("connect", () => {
        state.textContent = `Connected to ${url} as ${values.client_id} (user ${values.instance}).`;
        state.dataset.state = "connected";
        announce("Connected");
        subscriptions.replaceChildren();
      });
      mine.on("error", (error) => { alert.show(`The connection was refused: ${error.message}`); });
      mine.on("close", () => {
        if (client !== mine) return;
        state.textContent = "Not connected (the connection closed).";
        state.dataset.state = "disconnected";
      });
      mine.on("message", (topic, payload, packet) => {
        const props = packet.properties || {};
        const extras = [`QoS ${packet.qos}`, packet.retain && "retained", props.contentType && `content type ${props.contentType}`,
          props.responseTopic && `response topic ${props.responseTopic}`,
          props.userProperties && `user properties ${JSON.stringify(props.userProperties)}`].filter(Boolean);
        messages.prepend(h("li", {}, h("span", { class: "topic" }, topic), payloadView(h, preview(new Uint8Array(payload))),
          h("span", { class: "muted" }, `${new Date().toLocaleTimeString()} · ${extras.join(" · ")}`)));
        while (messages.children.length > 200) messages.lastChild.remove();
      });
    },
  });
  const disconnect = h("button", { type: "button", class: "secondary", onclick: () => {
    if (!client) return;
    end();
    state.textContent = "Not connected (you disconnected).";
    state.dataset.state = "disconnected";
    announce("Disconnected");
  } }, "Disconnect");

  // MQTT.js answers with Errors; the form shows a Problem next to its fields.
  const explained = async (work) => {
    try { return await work(); }
    catch (error) { throw error instanceof ui.Problem ? error : new ui.Problem(409, error.message || String(error)); }
  };
  const need = () => {
    if (!client || !client.connected) throw new ui.Problem(409, "Connect first.");
    return client;
  };
  const subscribeForm = form({
    layout: "inline",
    fields: [{ name: "filter", label: "Subscribe to", value: "#", required: true },
             { name: "qos", label: "Subscription QoS", type: "select", options: [["0", "0"], ["1", "1"], ["2", "2"]] }],
    submit: "Subscribe",
    onSubmit: async (values) => {
      const c = need();
      const granted = await explained(() => c.subscribeAsync(values.filter, { qos: Number(values.qos) }));
      const code = granted[0] ? granted[0].qos : 128;
      if (code >= 128) throw new ui.Problem(403, `Roost refused the subscription to ${values.filter} (reason 0x${code.toString(16)}).`);
      const remove = h("button", { type: "button", class: "secondary", "aria-label": `Unsubscribe from ${values.filter}`, onclick: async () => {
        try { await need().unsubscribeAsync(values.filter); item.remove(); announce(`Unsubscribed from ${values.filter}`); }
        catch (problem) { alert.show(problem); }
      } }, "Unsubscribe");
      const item = h("li", { "data-sub": values.filter }, h("code", {}, values.filter), ` QoS ${code} `, remove);
      subscriptions.append(item);
      announce(`Subscribed to ${values.filter}`);
    },
  });
  const publishForm = form({
    fields: [{ name: "topic", label: "Topic", required: true, value: "test/dashboard" },
             { name: "payload", label: "Message", type: "textarea" },
             { name: "qos", label: "QoS", type: "select", options: [["0", "0: at most once"], ["1", "1: at least once"], ["2", "2: exactly once"]] },
             { name: "retain", label: "Retain", type: "checkbox" },
             { name: "content_type", label: "Content type (MQTT 5)", placeholder: "application/json" },
             { name: "response_topic", label: "Response topic (MQTT 5)" },
             { name: "expiry", label: "Message expiry, seconds (MQTT 5)", type: "number" },
             { name: "user_properties", label: "User properties (MQTT 5), one name=value a line", type: "textarea" }],
    submit: "Publish",
    onSubmit: async (values) => {
      const c = need();
      const properties = {};
      if (values.content_type) properties.contentType = values.content_type;
      if (values.response_topic) properties.responseTopic = values.response_topic;
      if (values.expiry) properties.messageExpiryInterval = Number(values.expiry);
      const pairs = values.user_properties.split("\n").map((l) => l.trim()).filter(Boolean);
      if (pairs.length) {
        properties.userProperties = {};
        for (const pair of pairs) {
          const at = pair.indexOf("=");
          if (at < 1) { publishForm.fail("user_properties", `"${pair}" is not name=value.`); return; }
          properties.userProperties[pair.slice(0, at)] = pair.slice(at + 1);
        }
      }
      const qos = Number(values.qos);
      const options = { qos, retain: values.retain };
      if (c.options.protocolVersion === 5 && Object.keys(properties).length) options.properties = properties;
      const packet = await explained(() => c.publishAsync(values.topic, values.payload, options));
      const reason = packet && packet.reasonCode;
      const said = qos === 0 ? "sent (QoS 0: no acknowledgement)" : reason && reason >= 0x80
        ? `refused by Roost (reason 0x${reason.toString(16)})` : `acknowledged by Roost (QoS ${qos})`;
      const text = `Published to ${values.topic}${values.retain ? " (retained)" : ""} at ${new Date().toLocaleTimeString()}: ${said}.`;
      published.replaceChildren(h("p", { class: reason >= 0x80 ? "alert" : "notice", "data-published": values.topic }, text));
      announce(text);
    },
  });
  const hint = nextId("mqtt-hint");
  page("MQTT client", h("p", { class: "muted", id: hint },
    `A test client in this page, over Roost's WebSocket endpoint ${url}, signed in with one of your instances' credentials. `,
    instances.length ? "" : "You have no instance yet: create one on the Instances page, or type another's credentials."),
    alert, h("section", { class: "panel", "aria-label": "Connection" }, connectForm, h("div", { class: "actions" }, disconnect), state),
    h("div", { class: "two" },
      h("section", { class: "panel", "aria-label": "Subscribe" }, h("h2", {}, "Subscribe"), subscribeForm, subscriptions),
      h("section", { class: "panel", "aria-label": "Publish" }, h("h2", {}, "Publish"), publishForm, published)),
    h("h2", {}, "Messages"), h("section", { class: "panel", "aria-label": "Messages received" }, messages));
}
