"""Budget race helper: THREADS concurrent reservations in this process, all released when the parent
writes a line on stdin (after every sibling process said it was ready); prints how many were admitted."""

from __future__ import annotations

import json
import sys
import threading

from wavefleet import logs
from wavefleet.budget import Budget, Scope
from wavefleet.config import load_settings
from wavefleet.connection import connect
from wavefleet.errors import BudgetExceededError


def main(threads: int, cost_nusd: int, limit_nusd: int) -> None:
    logs.setup("BUDGET-PROC", fmt="json", level="info")  # log lines to stderr: stdout carries the result
    settings = load_settings()
    budget = Budget(connect(settings), settings.keys, settings.budgets)
    scope = Scope("story:RACE-001", "story RACE-001", limit_nusd, 10**12)
    go = threading.Event()
    admitted: list[bool] = []
    lock = threading.Lock()

    def reserve() -> None:
        go.wait(timeout=30)
        try:
            budget.reserve([scope], cost_nusd, 1)
            ok = True
        except BudgetExceededError:
            ok = False
        with lock:
            admitted.append(ok)

    workers = [threading.Thread(target=reserve) for _ in range(threads)]
    for worker in workers:
        worker.start()
    budget.redis.ping()  # connected before the start line, so the race is between reservations only
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()
    go.set()
    for worker in workers:
        worker.join(timeout=30)
    print(json.dumps({"admitted": sum(admitted), "refused": admitted.count(False)}), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
