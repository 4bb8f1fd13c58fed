"""The data plane: an OpenAI-compatible raw ASGI app that applies route weights.

app.py (ASGI app, `mount`), proxy.py (one request: choose, send, retry, relay),
snapshot.py (the in-memory config and its refresh), selection.py, retry.py,
sse.py (pure policy), breaker.py, limits.py, upstream.py (the one outbound
seam), recorder.py and metrics.py (recording off the hot path), errors.py,
serve.py (uvicorn, `manage.py gateway`).
"""
