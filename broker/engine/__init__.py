"""The MQTT protocol engine, sans-IO like the codec beneath it.

`Connection` (`connection.py`) is one client's protocol: bytes and the current time go in
(`receive_data(data, now)`, `handle_timeout(now)`), and out come the bytes to send (`data_to_send()`),
whether to close (`close_requested`) and when to be woken next (`next_deadline()`). It holds no socket, no
event loop and no task, so every rule is testable with plain bytes (`tests/broker/engine/`). The
`asyncio.Protocol` that feeds it is `broker/connection.py`, shared by TCP, TLS and WebSocket.

    connect.py     CONNECT negotiation: pure functions from a Connect and the settings
    outbound.py    PUBLISH packets to one client: forms, topic aliases, the maximum packet size
    acks.py        acknowledgements that wait (strict durability, receivers' holds), kept in order
    connection.py  the per-connection protocol object
"""

from broker.engine.connection import CLOSE, LINGER, Connection

__all__ = ["CLOSE", "LINGER", "Connection"]
