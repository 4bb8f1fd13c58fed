"""An OpenAI-compatible upstream for demos, tests and benchmarks.

A raw ASGI app (no Django needed) whose models misbehave on purpose, as their
Personality says: latency, pace, 429s, 5xx and connection-level faults.

    with SimulatorServer(models={"gpt-sim": Personality(latency_median_ms=20)}) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test")
        server.simulator.configure("gpt-sim", fault=Fault.CUT_MIDWAY)
        server.simulator.attempts("gpt-sim")
"""

from .app import Attempt, Simulator
from .personalities import PERSONALITIES, Change, Fault, Outcome, Personality, personality_from
from .server import SimulatorServer, run

__all__ = [
    "PERSONALITIES",
    "Attempt",
    "Change",
    "Fault",
    "Outcome",
    "Personality",
    "Simulator",
    "SimulatorServer",
    "personality_from",
    "run",
]
