"""The data plane: an OpenAI-compatible raw ASGI app that applies route weights."""
