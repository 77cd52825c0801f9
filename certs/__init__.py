"""Roost's certificates: a local CA, server and device certificates, as pure functions that return PEM
bytes (`certs.authority`), plus the small store that keeps Roost's own on disk (`certs.store`).

This package stands alone: it imports only `cryptography` and the standard library.
"""
