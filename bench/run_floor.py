"""Serve the shared bare pass-through proxy (../shared/bench/floor/minimal_proxy.py, aiohttp client)
against a given upstream port, so `FLOOR=1 bench/gateway.sh` can measure the floor in the same
run as the gateway (this machine's speed varies with what else runs on it).

usage: run_floor.py <floor dir> <listen port> <upstream port>
"""

import os
import sys

floor_dir, port, upstream_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.environ["CLIENT"] = "aiohttp"
sys.path.insert(0, floor_dir)

import minimal_proxy  # noqa: E402
import uvicorn  # noqa: E402

minimal_proxy.UP = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
uvicorn.run(minimal_proxy.app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", access_log=False,
            log_level="warning")
