"""Run both local servers in a process of their own (benchmarks keep them out of the measured process).

    python tests/servers/run.py --reply-chars 1600 --min-cache-tokens 1024

Prints one JSON line with the Anthropic base URL and the xAI host, then serves until its stdin closes
(or `--max-s` passes: it never outlives a forgotten parent by long).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from servers.anthropic_server import AnthropicServer
from servers.xai_server import XaiServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reply-chars", type=int, default=0)
    parser.add_argument("--min-cache-tokens", type=int, default=1024)
    parser.add_argument("--max-s", type=float, default=900.0)
    args = parser.parse_args()
    anthropic = AnthropicServer(reply_chars=args.reply_chars, min_cache_tokens=args.min_cache_tokens).start()
    xai = XaiServer(reply_chars=args.reply_chars, min_cache_tokens=args.min_cache_tokens).start()
    print(json.dumps({"anthropic_url": anthropic.url, "xai_host": xai.host}), flush=True)
    closed = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), closed.set()), daemon=True).start()
    closed.wait(timeout=args.max_s)
    anthropic.stop()
    xai.stop()


if __name__ == "__main__":
    main()
