"""The REST API: thin Starlette handlers over `control.services`.

`/v1/mqtt` follows mqtt-instances-api.md and `/api/v1` follows icmqtt-rest-api-v1.md; `openapi.py`
describes both. Each handler parses the request, calls one service, and shapes the response; errors are
raised as `ServiceError`s or `ApiError` and turned into the documents' error bodies in `errors.py`.
"""
