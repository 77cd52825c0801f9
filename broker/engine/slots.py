"""The attributes of one `broker.engine.Connection`, as its `__slots__`.

Why slots: an engine has more attributes than CPython 3.11 shares among the instance dictionaries of one
class (30), so without slots each connection kept a dictionary of its own, 1.7 KB, the largest single
object of an idle connection (docs/benchmarks.md, "Memory (issue 20)"). With slots it is one array of
pointers in the object. Kept here, beside the class, only because connection.py is at its line ceiling;
every attribute set in `Connection.__init__` must be named here, or setting it raises AttributeError.
"""

__all__ = ["CONNECTION_SLOTS"]

CONNECTION_SLOTS = (
    "_acks", "_connect_deadline", "_expiry_at_connect", "_last_read", "_out", "admission", "broker",
    "certificate", "client", "close_reason", "close_requested", "closing", "congested", "connected_at",
    "encoder", "held_sends", "inflight_limit", "keep_alive", "listener", "messages_received", "messages_sent",
    "mount", "on_output", "plain_form", "reader", "rearm", "remote_address", "session", "state", "tls",
    "version", "will",
)
