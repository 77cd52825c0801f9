"""The web dashboard, served at `/` on the HTTP port: a static page and a small script (no build step, no
CDN) that use the public REST API with a session cookie. `routes.py` serves the page and signs people in
and out; `sessions.py` keeps sessions and slows down failed sign-ins; `static/` holds the page itself.
See docs/dashboard.md.
"""
