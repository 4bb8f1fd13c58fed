"""Context windows nobody typed: what a provider's model list, a model catalogue and a provider's own
context-length error say about a model's window. Pure functions: probes.windows asks the provider and
the catalogue on a schedule, the gateway reads an error (routing/gateway/proxy.py), and
`Deployment.window()` decides which source wins.

The catalogue is genai-prices (pinned in requirements.txt): Pydantic's maintained data file of model
prices and context windows, matched by the provider's URL and the model's name as its own lookup does
(dated and prefixed variants included). A catalogue that cannot be read only costs its answers.
"""

import logging
import re
from functools import cache
from importlib import metadata

log = logging.getLogger(__name__)

MAX_WINDOW = 100_000_000  # tokens; anything larger (or below 1) is not a window but noise
# Where model lists put a model's window: vLLM, OpenRouter / Together, Groq, Mistral.
LISTED_FIELDS = ("max_model_len", "context_length", "context_window", "max_context_length")
# How providers state the window in a context-length error (the number that is the window).
STATED = (
    re.compile(r"maximum (?:context|input) length (?:is|of) (\d[\d,]*) tokens", re.I),  # OpenAI, vLLM, OpenRouter
    # Anthropic: "prompt is too long: 210000 tokens > 200000 maximum"
    re.compile(r"\d[\d,]* tokens? > (\d[\d,]*) maximum", re.I),
    # Mistral: "too large for model with 32768 maximum context length"
    re.compile(r"(\d[\d,]*) maximum context length", re.I),
    # Not "context length of N": some providers say so of the request, not the model.
    re.compile(r"context (?:window|length) is (\d[\d,]*)|context window of (\d[\d,]*)", re.I),
    re.compile(r"max_model_len[= ](?:is )?(\d[\d,]*)", re.I),
)
CATALOGUE = "genai-prices"


def _tokens(value):
    """Return `value` as a window (an int in 1..MAX_WINDOW), or None."""
    if type(value) is str:
        value = value.replace(",", "")
        if not value.isdigit():
            return None
        value = int(value)
    if type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is not int or not 1 <= value <= MAX_WINDOW:
        return None
    return value


def listed_window(entry):
    """Return the window one entry of a GET /models answer reports, or None (also for anything malformed)."""
    if type(entry) is not dict:
        return None
    for name in LISTED_FIELDS:
        tokens = _tokens(entry.get(name))
        if tokens is not None:
            return tokens
    top = entry.get("top_provider")  # OpenRouter also states it per its top provider
    return _tokens(top.get("context_length")) if type(top) is dict else None


def listed_windows(payload):
    """Return {model id: (tokens, field)} from a GET /models answer ({"data": [...]}, or a bare list)."""
    entries = payload.get("data") if type(payload) is dict else payload
    windows = {}
    for entry in entries if type(entries) is list else ():
        tokens = listed_window(entry)
        if tokens is not None and type(entry.get("id")) is str:
            windows[entry["id"]] = tokens
    return windows


def stated_window(message):
    """Return the window a provider's context-length error states ("maximum context length is 4096 tokens"),
    or None when it names none."""
    for pattern in STATED:
        found = pattern.search(message or "")
        if found:
            return _tokens(next(group for group in found.groups() if group is not None))
    return None


@cache
def catalogue_version():
    """Return "genai-prices <version>", or "" when the package is not installed."""
    try:
        return f"{CATALOGUE} {metadata.version(CATALOGUE)}"
    except metadata.PackageNotFoundError:
        return ""


def catalogue_window(model, base_url=None):
    """Return (tokens, entry) the catalogue knows for `model` served at `base_url`, or None.

    The provider is recognised by its URL first (api.openai.com, api.anthropic.com …); a URL the catalogue
    does not know (a gateway, a self-hosted server) is matched by the model's name alone. `entry` names the
    catalogue, its version and the matched provider and model.
    """
    for url in (base_url, None) if base_url else (None,):
        found = _catalogue_lookup(model, url)
        if found is not None:
            return found
    return None


def _catalogue_lookup(model, url):
    try:  # imported when first asked: the gateway imports this module for stated_window alone
        from genai_prices import data_snapshot
    except ImportError:  # not installed: no catalogue answers
        return None
    try:
        provider, info = data_snapshot.get_snapshot().find_provider_model(model, None, None, url)
    except LookupError:
        return None
    except Exception:  # a catalogue that cannot be read costs its answers, never the sweep
        log.warning("the model catalogue could not be read for %r", model, exc_info=True)
        return None
    tokens = _tokens(info.context_window)
    if tokens is None:
        return None
    return tokens, f"{catalogue_version()}: {provider.id} {info.id}"
