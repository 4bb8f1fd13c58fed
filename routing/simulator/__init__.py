"""An OpenAI-compatible upstream for demos, tests and benchmarks.

A raw ASGI app (no Django needed) whose models misbehave on purpose, as their
Personality says: latency, pace, 429s, 5xx and connection-level faults.

    with SimulatorServer(models={"gpt-sim": Personality(latency_median_ms=20)}) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test")
        server.simulator.configure("gpt-sim", fault=Fault.CUT_MIDWAY)
        # a rehearsal: from 3 minutes after this call, half again as slow and 2 points more errors
        server.simulator.configure("gpt-sim", schedule=[Change(after_s=180, latency_scale=1.5, error_rate_delta=0.02)])
        server.simulator.attempts("gpt-sim")
"""

from .app import Attempt, Simulator
from .personalities import PERSONALITIES, Change, Fault, Personality, Reply, personality_from
from .server import SimulatorServer, run

__all__ = [
    "PERSONALITIES",
    "Attempt",
    "Change",
    "Fault",
    "Reply",
    "Personality",
    "Simulator",
    "SimulatorServer",
    "personality_from",
    "run",
]
