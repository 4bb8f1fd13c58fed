"""One timed request against the simulator on loopback: figures, outcomes, redaction."""

import pytest

from probes.loadtest.client import Sender, Target
from probes.loadtest.prompts import builtin
from routing.loopback import ThreadedServer
from routing.simulator import Simulator, SimulatorServer

SECRET = "sk-loadtest-secret-000111222"
MODELS = {
    "paced": {"latency_median_ms": 100, "latency_p99_ms": 100, "tokens_per_s": 100, "output_tokens": 16},
    "broken": {"error_rate": 1.0},
    "cut": {"base": "fault-cut-midway", "output_tokens": 16},
}


@pytest.fixture(scope="module")
def sim():
    with SimulatorServer(Simulator(models=MODELS, seed=1)) as server:
        yield server


def target(sim, model, secret=SECRET):
    return Target(url=f"{sim.base_url}/chat/completions", model=model, secret=secret,
                  prices={"d": (1.0, 2.0)}, deployment="d")


async def send(sim, model, stream=True, secret=SECRET):
    async with Sender(target(sim, model, secret), max_tokens=16, stream=stream, timeout_s=10) as sender:
        return await sender.send(builtin()[0])


async def test_a_paced_stream_shows_its_latency_as_ttft_and_its_pace_as_itl(sim):
    sample = await send(sim, "paced")
    assert sample.outcome == "ok"
    assert sample.tokens_out == 16
    assert 95 <= sample.ttft < 400
    assert 5 <= sample.itl < 60  # 100 tokens/s -> 10 ms apart
    assert sample.tpot == pytest.approx((sample.e2e - sample.ttft) / 15)
    assert sample.cost == pytest.approx((sample.tokens_in * 1.0 + 16 * 2.0) / 1e6)


async def test_a_non_streaming_answer_has_its_usage_and_no_ttft(sim):
    sample = await send(sim, "paced", stream=False)
    assert sample.outcome == "ok"
    assert sample.tokens_out == 16
    assert sample.ttft is None
    assert sample.e2e >= 95


async def test_a_5xx_is_a_server_error_with_its_message(sim):
    sample = await send(sim, "broken")
    assert (sample.outcome, sample.status) == ("server_error", 500)
    assert sample.error.startswith("HTTP 500")


async def test_a_stream_cut_midway_is_truncated(sim):
    sample = await send(sim, "cut")
    assert sample.outcome == "truncated"


async def test_a_refused_connection_is_a_connect_error_that_never_shows_the_key():
    dead = Target(url="http://127.0.0.1:9/v1/chat/completions", model="x", secret=SECRET)
    async with Sender(dead, max_tokens=4, timeout_s=2) as sender:
        sample = await sender.send(builtin()[0])
    assert sample.outcome == "connect_error"
    assert SECRET not in sample.error


async def echo_key(scope, receive, send):
    """An upstream whose 401 repeats the bearer key it was sent, as some do."""
    if scope["type"] != "http":
        return
    auth = dict(scope["headers"]).get(b"authorization", b"").decode()
    key = auth.removeprefix("Bearer ")
    body = ('{"error": {"message": "Incorrect API key provided: ' + key + '"}}').encode()
    await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


async def test_an_error_echoing_the_key_is_redacted():
    with ThreadedServer(echo_key) as server:
        echo = Target(url=f"{server.base_url}/chat/completions", model="x", secret=SECRET)
        async with Sender(echo, max_tokens=4, timeout_s=5) as sender:
            sample = await sender.send(builtin()[0])
    assert sample.outcome == "bad_key"
    assert "Incorrect API key provided" in sample.error
    assert SECRET not in sample.error


# --- the outbound policy of direct runs: the gateway's resolver, no redirects, the key's limits ----------------

class Upstream:
    """A tiny upstream that records what reached it: request start times, the most in flight at once."""

    def __init__(self, delay_s=0.0):
        self.delay_s = delay_s
        self.starts = []
        self.in_flight = self.most = 0
        self.redirected_to = 0

    def app(self):
        import asyncio
        import time

        from aiohttp import web

        async def chat(request):
            self.starts.append(time.monotonic())
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            await asyncio.sleep(self.delay_s)
            self.in_flight -= 1
            return web.json_response({"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}],
                                      "usage": {"prompt_tokens": 3, "completion_tokens": 1}})

        async def moved(request):
            raise web.HTTPTemporaryRedirect("/internal")

        async def internal(request):
            self.redirected_to += 1
            return web.json_response({})

        app = web.Application()
        app.add_routes([web.post("/v1/chat/completions", chat), web.post("/moved/chat/completions", moved),
                        web.post("/internal", internal)])
        return app


@pytest.fixture
async def upstream():
    from aiohttp.test_utils import TestServer

    recorder = Upstream(delay_s=0.05)
    server = TestServer(recorder.app(), host="127.0.0.1")
    await server.start_server()
    recorder.url = f"http://127.0.0.1:{server.port}"
    recorder.port = server.port
    yield recorder
    await server.close()


async def direct(target, count=1, stream=False):
    import asyncio

    async with Sender(target, max_tokens=16, stream=stream, timeout_s=10) as sender:
        return await asyncio.gather(*(sender.send(builtin()[0]) for _ in range(count)))


async def test_a_direct_run_never_connects_to_a_name_that_resolves_internal(upstream, settings):
    settings.ALLOW_PRIVATE_UPSTREAMS = False
    guarded = Target(url=f"http://localhost:{upstream.port}/v1/chat/completions", model="m", secret=SECRET,
                     guarded=True)
    [sample] = await direct(guarded)
    assert sample.outcome == "connect_error" and "internal address" in sample.error
    assert upstream.starts == [] and SECRET not in sample.error


async def test_a_redirect_is_an_answer_never_followed(upstream):
    [sample] = await direct(Target(url=f"{upstream.url}/moved/chat/completions", model="m", secret=SECRET))
    assert sample.status == 307 and sample.outcome != "ok"
    assert upstream.redirected_to == 0


async def test_a_direct_run_keeps_to_the_providers_concurrency(upstream):
    samples = await direct(Target(url=f"{upstream.url}/v1/chat/completions", model="m", max_in_flight=2), count=6)
    assert [s.outcome for s in samples] == ["ok"] * 6
    assert upstream.most == 2


async def test_a_direct_run_spaces_its_requests_by_the_keys_rpm_and_tpm(upstream):
    await direct(Target(url=f"{upstream.url}/v1/chat/completions", model="m", rpm=600), count=4)  # 0.1 s apart
    gaps = [b - a for a, b in zip(upstream.starts, upstream.starts[1:], strict=False)]
    assert len(gaps) == 3 and min(gaps) >= 0.09
    tokens = builtin()[0].estimated_tokens() + 16
    upstream.starts.clear()
    await direct(Target(url=f"{upstream.url}/v1/chat/completions", model="m", tpm=tokens * 600), count=3)
    gaps = [b - a for a, b in zip(upstream.starts, upstream.starts[1:], strict=False)]
    assert min(gaps) >= 0.09
