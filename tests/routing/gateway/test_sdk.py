"""The official openai SDK, unmodified, pointed at the gateway with a gateway key."""

import openai
import pytest

from tests.routing.gateway.helpers import client_key, make_provider, make_route

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = [{"role": "user", "content": "Say something."}]


@pytest.fixture
def sdk_gateway(sim, serve_gateway):
    provider = make_provider(sim)
    make_route("sdk-model", provider, {"sim-steady": ("fast", 100)})
    key = client_key()
    return serve_gateway(), key


def expected_text(tokens):
    return "".join(f"tok{i} " for i in range(tokens))


def test_the_sync_sdk_gets_a_completion(sdk_gateway):
    gateway, key = sdk_gateway
    client = openai.OpenAI(base_url=gateway.base_url, api_key=key.plaintext, max_retries=0)
    completion = client.chat.completions.create(model="sdk-model", messages=MESSAGES, max_tokens=5)
    assert completion.choices[0].message.content == expected_text(5)
    assert completion.usage.completion_tokens == 5


def test_the_sync_sdk_streams_every_token_once(sdk_gateway):
    gateway, key = sdk_gateway
    client = openai.OpenAI(base_url=gateway.base_url, api_key=key.plaintext, max_retries=0)
    stream = client.chat.completions.create(model="sdk-model", messages=MESSAGES, max_tokens=7, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected_text(7)
    assert chunks[-1].usage.completion_tokens == 7


async def test_the_async_sdk_gets_a_completion_and_a_stream(sdk_gateway):
    gateway, key = sdk_gateway
    async with openai.AsyncOpenAI(base_url=gateway.base_url, api_key=key.plaintext, max_retries=0) as client:
        completion = await client.chat.completions.create(model="sdk-model", messages=MESSAGES, max_tokens=3)
        assert completion.choices[0].message.content == expected_text(3)
        stream = await client.chat.completions.create(model="sdk-model", messages=MESSAGES, max_tokens=4, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == expected_text(4)


def test_the_sdk_lists_models_and_embeds(sdk_gateway):
    gateway, key = sdk_gateway
    client = openai.OpenAI(base_url=gateway.base_url, api_key=key.plaintext, max_retries=0)
    assert [m.id for m in client.models.list()] == ["sdk-model"]
    assert client.models.retrieve("sdk-model").id == "sdk-model"
    embedding = client.embeddings.create(model="sdk-model", input="hello")
    assert len(embedding.data[0].embedding) > 0


def test_the_sdk_raises_its_own_errors_for_the_gateways_refusals(sdk_gateway):
    gateway, key = sdk_gateway
    client = openai.OpenAI(base_url=gateway.base_url, api_key="wv-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="sdk-model", messages=MESSAGES)
    client = openai.OpenAI(base_url=gateway.base_url, api_key=key.plaintext, max_retries=0)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=MESSAGES)
    assert missing.value.code == "model_not_found"
