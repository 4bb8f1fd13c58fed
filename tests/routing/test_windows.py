"""What a provider's error, its model list and the catalogue say about a context window (routing.windows),
and which source a deployment uses (Deployment.window)."""

import pytest

from routing.models import Deployment, Provider, WindowSource
from routing.windows import catalogue_window, listed_windows, stated_window


@pytest.mark.parametrize("message, tokens", [
    ("HTTP 400: This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.", 4096),
    ("HTTP 400: This endpoint's maximum context length is 131,072 tokens. However, you requested about 140000", 131072),
    ("HTTP 400: prompt is too long: 210000 tokens > 200000 maximum", 200000),
    ("HTTP 400: The input (9000 tokens) is longer than the model's context window of 8192 tokens.", 8192),
    ("HTTP 400: Prompt contains 40000 tokens, too large for model with 32768 maximum context length", 32768),
    ("HTTP 400: Requested context length of 9000 tokens is too long", None),  # the request's size, not the window
    ("HTTP 400: Please reduce the length of the messages or completion.", None),
    ("HTTP 400: maximum context length is 0 tokens", None),
    ("", None),
])
def test_a_providers_error_states_the_window_when_it_names_one(message, tokens):
    assert stated_window(message) == tokens


def test_a_model_list_gives_each_models_window_in_any_providers_field_and_ignores_the_rest():
    payload = {"object": "list", "data": [
        {"id": "vllm-model", "max_model_len": 32768},
        {"id": "router/model", "context_length": 131072},
        {"id": "router/other", "top_provider": {"context_length": 65536}},
        {"id": "groq-model", "context_window": 8192},
        {"id": "mistral-model", "max_context_length": "128000"},
        {"id": "silent"},
        {"id": "negative", "max_model_len": -1},
        {"id": "absurd", "context_length": 10**12},
        {"id": "a-bool", "context_length": True},
        {"max_model_len": 100},
        "not an object",
    ]}

    assert listed_windows(payload) == {"vllm-model": 32768, "router/model": 131072, "router/other": 65536,
                                       "groq-model": 8192, "mistral-model": 128000}
    assert listed_windows({"data": "nope"}) == {} and listed_windows(None) == {}


def test_the_catalogue_knows_well_known_models_and_names_itself_and_not_made_up_ones():
    known = catalogue_window("gpt-4o", "https://api.openai.com/v1")
    dated = catalogue_window("gpt-4o-2024-08-06", "https://api.openai.com/v1")
    elsewhere = catalogue_window("gpt-4o", "http://127.0.0.1:8080/v1")  # a URL it does not know: the name decides

    assert known is not None and known[0] > 0 and known[1].startswith("genai-prices ")
    assert dated == known == elsewhere
    assert catalogue_window("house-model-7") is None


@pytest.mark.django_db
def test_a_typed_window_wins_then_the_learned_one_then_the_providers_then_the_catalogues():
    provider = Provider.objects.create(name="p", base_url="http://127.0.0.1:9/v1")
    deployment = Deployment.objects.create(name="d", provider=provider, upstream_model="m")
    assert deployment.window() == (None, WindowSource.UNKNOWN)

    for column, tokens, source in (("catalogue_window", 1000, WindowSource.CATALOGUE),
                                   ("provider_window", 2000, WindowSource.PROVIDER),
                                   ("learned_window", 500, WindowSource.LEARNED),
                                   ("context_window", 8000, WindowSource.TYPED)):
        setattr(deployment, column, tokens)
        assert deployment.window() == (tokens, source)


@pytest.mark.django_db
def test_a_new_model_or_provider_forgets_the_windows_found_for_the_old_one_but_not_the_typed_one():
    provider = Provider.objects.create(name="p", base_url="http://127.0.0.1:9/v1")
    other = Provider.objects.create(name="q", base_url="http://127.0.0.1:9/v1")
    Deployment.objects.create(name="d", provider=provider, upstream_model="m", context_window=9000)
    Deployment.objects.filter(name="d").update(learned_window=500, provider_window=2000, catalogue_window=1000)

    renamed = Deployment.objects.get(name="d")
    renamed.display_name = "same model"
    renamed.save()
    assert Deployment.objects.get(name="d").windows()["learned_from_error"] == 500  # nothing about the model changed

    moved = Deployment.objects.get(name="d")
    moved.provider = other
    moved.save(update_fields=["provider"])
    saved = Deployment.objects.get(name="d")
    assert saved.windows() == {"typed": 9000, "learned_from_error": None, "provider_metadata": None,
                               "catalogue": None}
    assert saved.windows_checked_at is None  # checked again at the next sweep
