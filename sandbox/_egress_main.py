"""The egress proxy of a deployed service, as it runs in a container of its own beside the
service (`python3 -m sandbox._egress_main`): the same proxy as a task's, with the allowlist the
deploy was approved with, for as long as the service runs (which is longer than the runner).

It prints one JSON line per decision (what `agent deployments logs NAME --egress` shows), and
imports nothing but the standard library and the proxy's own modules: its image is the runtime
image with those files added (see `sandbox/_service_egress.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

from sandbox._addresses import own_of
from sandbox.proxy import EgressAttempt, EgressProxy

#: the environment variable the proxy's token comes in (kept out of its command line)
TOKEN = "AGENT_EGRESS_TOKEN"
PORT = 3128
LISTENING = "listening"


def _record(attempt: EgressAttempt) -> None:
    decision = {
        "time": round(time.time(), 3),
        "method": attempt.method,
        "host": attempt.host,
        "port": attempt.port,
        "allowed": attempt.allowed,
        "reason": attempt.reason,
        "address": attempt.address,
    }
    print(json.dumps(decision), flush=True)


async def _serve(args: argparse.Namespace) -> None:
    proxy = EgressProxy(
        "0.0.0.0",  # its one network in is the deployment's own
        PORT,
        allow_private=args.allow_private,
        own=own_of(args.own),
    )
    async with proxy:
        proxy.register(args.service, args.allow, _record, token=os.environ[TOKEN])
        print(json.dumps({LISTENING: PORT, "allow": args.allow}), flush=True)
        await asyncio.Event().wait()  # until the container is stopped


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="agent-egress")
    parser.add_argument("--service", required=True, help="NAME vN, as decisions name it")
    parser.add_argument("--allow", action="append", default=[], help="an allowlist entry")
    parser.add_argument("--own", action="append", default=[], help="an address of the host")
    parser.add_argument("--allow-private", action="store_true")
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
