"""Bridges from this Roost to upstream brokers (see bridge/link.py for the link interface)."""
