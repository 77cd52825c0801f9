"""Roost's certificates: a local CA, server and device certificates, as pure functions that return PEM
bytes (`certs.authority`), plus the small store that keeps Roost's own on disk (`certs.store`), which
makes them in a short-lived child process (`certs.generate`) when the process asking has not loaded
cryptography.

This package stands nearly alone: it imports `cryptography`, the standard library and Roost's error root
(`broker/errors.py`, which imports nothing).
"""
