"""Bridges from this Roost to upstream brokers: store-and-forward that loses nothing.

A floor above `broker/` and `storage/` (never imported by either): a bridge receives the local messages it
forwards through the broker's delivery interface (it sits in the router like a connection), keeps them
in a durable outbox (`storage/outbox.py`), and sends them over an upstream link (`bridge/link.py`, the
small interface an MQTT link and a NATS JetStream link implement). Commands come down the same link
and are published into the local namespace.

    config.py       `[[bridge]]` tables -> `BridgeConfig` (validated, naming the bad key)
    mqtt_client.py  a sans-IO MQTT client: bytes in, events out, and back
    link.py         `UpstreamLink` (the interface) and `LinkHandler` (what a link reports to)
    mqtt_link.py    the asyncio shell around mqtt_client.py: TCP or TLS, keep alive, ack timeouts
    ws_wire.py      MQTT over WebSocket for ws:// and wss:// upstreams (wsproto), under mqtt_link.py
    nats_link.py    the NATS JetStream link (a nats:// url), through nats-py
    nats_subjects.py  MQTT topics and filters <-> NATS subjects, as nats-server maps them (sans-IO)
    nats_headers.py MQTT 5 properties <-> NATS headers (sans-IO)
    nats_config.py  the keys of a NATS bridge
    nkeys.py        NATS nkey signing with `cryptography` (creds files, nkey seed files)
    bridge.py       one bridge: the local receiver, the outbox, caps, the sender, reconnects
    manager.py      every configured bridge, started and stopped with Roost; their state for REST/metrics
"""
