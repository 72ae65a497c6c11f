"""What verifying a reused task's outputs costs: for each task of one run, in a fresh process,
the recorded digest read from the tracking store, every file fetched afresh (downloaded, on a
server) and hashed, exactly as the runner does before it reuses them. Prints JSON."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path.cwd() / "src"))  # the project the benchmark runs in

from luigiflow.store import client
from luigiflow.targets import TaskFolder


def main(run_id: str, tasks: list[str]) -> None:
    client().get_run(run_id)  # the client's own start (a store connection) is not verification
    costs = {}
    for task in tasks:
        folder = TaskFolder(run_id, task)
        began = time.perf_counter()
        manifest = folder.verify(folder.recorded_digest(), fresh=True)
        seconds = time.perf_counter() - began
        size = sum(entry["size"] for entry in manifest["files"].values())
        costs[task] = {"seconds": seconds, "mb": size / 1e6, "files": len(manifest["files"])}
    print(json.dumps(costs))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
