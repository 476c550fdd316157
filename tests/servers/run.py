"""Run both local servers in a process of their own (benchmarks keep them out of the measured process).

    python tests/servers/run.py --reply-chars 1600 --min-cache-tokens 1024
    python tests/servers/run.py --respond-with benchmarks/agent_tools.py:scripted_model

Prints one JSON line with the Anthropic base URL and the xAI host, then serves until its stdin closes
(or `--max-s` passes: it never outlives a forgotten parent by long).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from servers.anthropic_server import AnthropicServer
from servers.xai_server import XaiServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reply-chars", type=int, default=0)
    parser.add_argument("--min-cache-tokens", type=int, default=1024)
    parser.add_argument("--max-s", type=float, default=900.0)
    parser.add_argument(
        "--respond-with", help="FILE.py:FUNCTION, a scripted model for both servers (fn(body) -> Reply)"
    )
    args = parser.parse_args()
    anthropic = AnthropicServer(reply_chars=args.reply_chars, min_cache_tokens=args.min_cache_tokens).start()
    xai = XaiServer(reply_chars=args.reply_chars, min_cache_tokens=args.min_cache_tokens).start()
    if args.respond_with:
        anthropic.respond_with(_function(args.respond_with, "anthropic"))
        xai.respond_with(_function(args.respond_with, "xai"))
    print(json.dumps({"anthropic_url": anthropic.url, "xai_host": xai.host}), flush=True)
    closed = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), closed.set()), daemon=True).start()
    closed.wait(timeout=args.max_s)
    anthropic.stop()
    xai.stop()


def _function(where: str, server: str) -> Callable[[dict[str, Any]], Any]:
    """The function FILE.py:NAME, called with the server's name: it returns that server's responder."""
    path, _, name = where.rpartition(":")
    spec = importlib.util.spec_from_file_location("scripted", path)
    if spec is None or spec.loader is None or not name:
        raise SystemExit(f"--respond-with {where}: give FILE.py:FUNCTION")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    factory: Callable[[str], Callable[[dict[str, Any]], Any]] = getattr(module, name)
    return factory(server)


if __name__ == "__main__":
    main()
