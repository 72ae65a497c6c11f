"""What luigiflow costs over a plain script, measured side by side: `make bench`.

Every variant is a fresh process doing the same preprocessing, training and prediction. For
each, the harness records wall time (median, min and max over the repeats) and the peak memory
of the whole process tree; for luigiflow also each task's time and the framework's own part of
it (the task's time minus its user code). It writes bench/RESULTS.md (a table for a person)
and bench/results.json (the machine, the versions and every raw sample).

The "on server" variants run on the stack of docker-compose.yml, started as the tests start
it (tests/stack.py): MLflow's tracking server on PostgreSQL with proxied artifacts, behind a
proxy that counts requests, and luigid. There too, a branching pipeline (bench/branches.py)
runs once with one worker and once with a second clone joining the run (`--join`), as a
teammate's machine would.

`--quick` runs the example data once, to check that the harness works (the tests do so).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The shared stack, started exactly as the tests start it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from counting_proxy import CountingProxy
from report import write_report
from stack import Database, Stack, running_postgres, start_stack
from workloads import make_workload

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
TASKS = ("Preprocessor", "Splitter", "Trainer", "Evaluator", "Register", "Prediction")
SIZES = {"example": None, "100k": 100_000, "1M": 1_000_000}
ENV = {
    **{
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "LUIGI", "PROJECT_ROOT"))
    },
    "MLFLOW_DISABLE_TELEMETRY": "true",
}
IMPORT_FLOOR = "import mlflow, luigi, sklearn, pandas"
STORE_FLOOR = (
    "import luigi, mlflow; from mlflow import MlflowClient; client = MlflowClient(); "
    "experiment = client.get_experiment_by_name('titanic'); "
    "[run] = client.search_runs([experiment.experiment_id], max_results=1); "
    "client.get_run(run.info.run_id)"
)


@dataclass
class Sample:
    seconds: float
    peak_rss_mb: float
    run_id: str | None = None
    tasks: dict[str, dict[str, float]] = field(default_factory=dict)  # task -> seconds, overhead
    requests: dict[str, int] | None = None  # method and path -> count, against a server
    processes: int | None = None  # how many processes ran the branches (two clones: 2)


def measure(command: list[str], cwd: Path, env: dict) -> tuple[float, float, str]:
    """Wall time, peak resident memory of the process and all its descendants, and stdout."""
    started = time.monotonic()
    process = psutil.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    peak = 0
    while process.poll() is None:
        try:
            tree = [process, *process.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree))
        except psutil.Error:
            pass  # a child ended between listing and reading: the next sample sees the rest
        time.sleep(0.005)
    seconds = time.monotonic() - started
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited {process.returncode}:\n{stderr.decode()[-4000:]}"
        )
    return seconds, peak / 2**20, stdout.decode()


def run_id_in(stdout: str) -> str | None:
    """The run id of the runner's "Run <id> started: ..." line, if it printed one."""
    for line in stdout.splitlines():
        if line.startswith("Run ") and " started" in line:
            return line.split()[1]
    return None


class Workload:
    """One data size: its data, a fresh copy of the project and that copy's store."""

    def __init__(self, size: str, rows: int | None, repeats: int, work: Path) -> None:
        self.size, self.repeats = size, repeats
        self.folder = work / size
        shutil.rmtree(self.folder, ignore_errors=True)
        self.data = make_workload(REPO / "input", rows, self.folder / "data")
        self.project = self.folder / "project"
        shutil.copytree(work / "src", self.project / "src")
        for name in (".env", "luigi.toml"):
            shutil.copy(REPO / name, self.project / name)
        self.store = f"sqlite:///{self.project / 'mlflow.db'}"
        self.samples: dict[str, list[Sample]] = {}
        self.verification: dict[str, dict] = {}  # store -> task -> seconds, MB, files

    def clone(self, name: str) -> Path:
        """A second copy of the measured project with the branching pipeline (bench/branches.py)
        in its tasks: what a teammate's checkout on another machine holds."""
        project = self.folder / name
        shutil.copytree(self.project / "src", project / "src")
        shutil.copy(REPO / "bench/branches.py", project / "src/tasks/branches.py")
        with open(project / "src/tasks/__init__.py", "a") as init:
            init.write("from tasks.branches import Candidates, ForestA, ForestB  # noqa: F401\n")
        for name in (".env", "luigi.toml"):
            shutil.copy(self.project / name, project / name)
        return project

    def runner(self, *args: str) -> list[str]:
        return [PYTHON, "src/runner.py", "--set", f'PathConfig.input="{self.data}"', *args]

    def plain(self, *args: str) -> list[str]:
        return [
            PYTHON,
            str(REPO / "bench/plain.py"),
            "--data",
            str(self.data),
            "--out",
            str(self.folder / "plain"),
            *args,
        ]

    def record(
        self, variant: str, command: list[str], tracking_uri: str | None = None, proxy=None
    ) -> None:
        for _ in range(self.repeats):
            self._sample(variant, command, tracking_uri, proxy)

    def record_alternately(self, commands: dict[str, list[str]]) -> None:
        """Variants whose ratio is a target, measured in turn: a machine that slows down for a
        while slows both sides of the ratio, not one."""
        for _ in range(self.repeats):
            for variant, command in commands.items():
                self._sample(variant, command)

    def _sample(
        self, variant: str, command: list[str], tracking_uri: str | None = None, proxy=None
    ) -> None:
        env = {**ENV, "MLFLOW_TRACKING_URI": tracking_uri or self.store}
        if proxy:
            proxy.reset()
        seconds, peak, stdout = measure(command, self.project, env)
        sample = Sample(seconds, peak, requests=proxy.counts() if proxy else None)
        self._read_run(sample, stdout, tracking_uri or self.store)
        self.samples.setdefault(variant, []).append(sample)
        print(f"{self.size:>8}  {variant:<24}{seconds:7.2f} s {peak:8.0f} MB", flush=True)

    def _read_run(self, sample: Sample, stdout: str, tracking_uri: str) -> None:
        """Per-task time and framework overhead, read back from the run the runner made."""
        sample.run_id = run_id_in(stdout)
        if sample.run_id is None:
            return
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri)
        with tempfile.TemporaryDirectory() as folder:
            for task in TASKS:  # each task that ran has a record (luigiflow/tasks/<Task>.json)
                try:
                    path = client.download_artifacts(
                        sample.run_id, f"luigiflow/tasks/{task}.json", folder
                    )
                except Exception:  # reused: no record in this run
                    continue
                record = json.loads(Path(path).read_text())
                if record.get("duration_s") is not None:
                    total, user = record["duration_s"], record["user_code_s"]
                    sample.tasks[task] = {"seconds": total, "overhead": total - user}

    def run(self, database: Database | None) -> None:
        env = {**ENV, "MLFLOW_TRACKING_URI": self.store}
        seconds, peak, _ = measure(
            [PYTHON, "-c", "from mlflow import MlflowClient; MlflowClient().search_experiments()"],
            self.project,
            env,
        )
        self.samples["create empty store"] = [Sample(seconds, peak)]
        measure(
            self.runner(), self.project, env
        )  # the experiment, and a run for the store floor to read

        self.record("import floor", [PYTHON, "-c", IMPORT_FLOOR])
        self.record("store floor", [PYTHON, "-c", STORE_FLOOR])
        self.record("plain", self.plain())
        self.record_alternately(
            {
                "plain + MLflow": self.plain("--tracking-uri", self.store),
                "luigiflow cold": self.runner("--no-cache"),
            }
        )
        self.record("luigiflow reused", self.runner())  # found by fingerprint in the store
        self.verify("embedded", self.samples["luigiflow cold"][-1].run_id, self.store)
        self.record("luigiflow --workers 2", self.runner("--workers", "2", "--no-cache"))
        sweep = ("--sweep", "Trainer.seed=0,1,2,3", "--no-cache")
        self.record("sweep of 4, 1 worker", self.runner(*sweep))
        self.record("sweep of 4, 2 workers", self.runner(*sweep, "--workers", "2"))
        if database:
            self.on_server(database)

    def on_server(self, database: Database) -> None:
        """luigiflow against the stack of docker-compose.yml (MLflow's server on PostgreSQL,
        luigid), its requests counted by a proxy; then the branching pipeline, by one worker
        and by two clones (the second joins the run with --join)."""
        stack_on = contextmanager(start_stack)
        with (
            stack_on(database, self.folder / "stack", f"bench_{self.size.lower()}") as stack,
            CountingProxy(stack.tracking_uri) as proxy,
        ):
            proxy.wait_until_up("/health", timeout=180)
            measure(self.runner(), self.project, {**ENV, "MLFLOW_TRACKING_URI": proxy.url})
            self.record("luigiflow on server", self.runner("--no-cache"), proxy.url, proxy)
            self.record("luigiflow reused on server", self.runner(), proxy.url)
            self.verify("server", self.samples["luigiflow on server"][-1].run_id, proxy.url)
            self.branches(stack)

    def branches(self, stack: Stack) -> None:
        env = {
            **ENV,
            "MLFLOW_TRACKING_URI": stack.tracking_uri,
            "LUIGIFLOW_SCHEDULER_URL": stack.scheduler_url,
        }
        first, second = self.clone("clone-1"), self.clone("clone-2")
        command = self.runner("--task", "Candidates", "--no-cache")
        for _ in range(self.repeats):
            seconds, peak, stdout = measure(command, first, env)
            self._record_branches("branches, 1 worker", Sample(seconds, peak), stdout, stack)
        for _ in range(self.repeats):
            sample, stdout = self._two_clones(command, first, second, env)
            self._record_branches("branches, 2 workers on two clones", sample, stdout, stack)

    def _two_clones(
        self, command: list[str], first: Path, second: Path, env: dict
    ) -> tuple[Sample, str]:
        """The run from the first clone; the second joins it as soon as its id is printed.
        Wall time until both have exited."""
        started = time.monotonic()
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        creator = subprocess.Popen(command, cwd=first, env=env, **pipes)
        processes = {"run": creator}
        try:
            seen = ""
            for line in creator.stdout:  # printed (and flushed) as soon as the run exists
                seen += line
                if run_id := run_id_in(line):
                    break
            else:
                raise RuntimeError(f"no run started:\n{seen}{creator.stderr.read()[-4000:]}")
            processes["join"] = subprocess.Popen(
                [PYTHON, "src/runner.py", "--join", run_id], cwd=second, env=env, **pipes
            )
            outputs = {name: p.communicate(timeout=1800) for name, p in processes.items()}
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.kill()
                    process.wait()
        seconds = time.monotonic() - started
        for name, process in processes.items():
            if process.returncode != 0:
                error = outputs[name][1]
                raise RuntimeError(f"{name} exited {process.returncode}:\n{error[-4000:]}")
        return Sample(seconds, 0.0), seen + outputs["run"][0]

    def _record_branches(self, variant: str, sample: Sample, stdout: str, stack: Stack) -> None:
        """Which processes ran the two branches, read back from the run's per-task records."""
        from mlflow import MlflowClient

        run_id = run_id_in(stdout)
        client, pids = MlflowClient(stack.tracking_uri), set()
        for family in ("ForestA", "ForestB"):
            path = client.download_artifacts(run_id, f"luigiflow/tasks/{family}.json", None)
            pids.add(json.loads(Path(path).read_text())["pid"])
        sample.run_id, sample.processes = run_id, len(pids)
        self.samples.setdefault(variant, []).append(sample)
        print(f"{self.size:>8}  {variant:<24}{sample.seconds:7.2f} s  {len(pids)} process(es)")

    def verify(self, store: str, run_id: str | None, tracking_uri: str) -> None:
        """What verifying each task's outputs costs when a later run reuses them."""
        if run_id is None:
            return
        result = subprocess.run(
            [PYTHON, str(REPO / "bench/verification.py"), run_id, *TASKS],
            cwd=self.project,
            env={**ENV, "MLFLOW_TRACKING_URI": tracking_uri, "PROJECT_ROOT": str(self.project)},
            capture_output=True,
            text=True,
            check=True,
        )
        self.verification[store] = json.loads(result.stdout.splitlines()[-1])


def serialization(work: Path) -> dict[str, dict[str, float]]:
    """skops and cloudpickle: save and load, each in a fresh process."""
    results = {}
    for fmt in ("skops", "cloudpickle"):
        folder = work / f"model-{fmt}"
        shutil.rmtree(folder, ignore_errors=True)
        timings = {}
        for mode in ("save", "load"):
            _, _, stdout = measure(
                [PYTHON, str(REPO / "bench/serialization.py"), mode, fmt, str(folder)], work, ENV
            )
            timings[mode] = json.loads(stdout.strip().splitlines()[-1])["seconds"]
        results[fmt] = timings
    return results


def machine() -> dict:
    names = ("luigi", "mlflow", "scikit-learn", "pandas", "pyarrow", "numpy", "skops")
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "versions": {name: version(name) for name in names},
    }


def postgresql_version(database: Database) -> str:
    """The version of the PostgreSQL server the stack variants ran on."""
    import psycopg

    with psycopg.connect(
        host=database.host, port=database.port, user="postgres",
        password=database.superuser_password, dbname="postgres",
    ) as connection:  # fmt: skip
        return connection.execute("SHOW server_version").fetchone()[0].split()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="example data, one repeat: checks the harness, not the timings",
    )
    parser.add_argument("--sizes", nargs="+", choices=SIZES, default=list(SIZES))
    parser.add_argument("--repeats", type=int, default=5, help="repeats per variant (3 at 1M rows)")
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "out", help="scratch folder")
    parser.add_argument("--results", type=Path, default=REPO / "bench")
    parser.add_argument(
        "--no-server", action="store_true", help="skip the variants on the shared stack"
    )
    args = parser.parse_args()
    args.work, args.results = args.work.resolve(), args.results.resolve()  # runs change folder
    sizes = ["example"] if args.quick else args.sizes

    # The code measured is the code as it was at the start, whatever happens to src/ meanwhile.
    shutil.rmtree(args.work / "src", ignore_errors=True)
    shutil.copytree(REPO / "src", args.work / "src", ignore=shutil.ignore_patterns("__pycache__"))
    results = {"machine": machine(), "sizes": {}}
    with nullcontext() if args.no_server else running_postgres() as database:
        if database:
            results["machine"]["postgresql"] = postgresql_version(database)
        for size in sizes:
            repeats = 1 if args.quick else (min(args.repeats, 3) if size == "1M" else args.repeats)
            workload = Workload(size, SIZES[size], repeats, args.work)
            workload.run(database)
            results["sizes"][size] = {
                v: [asdict(s) for s in samples] for v, samples in workload.samples.items()
            }
            results.setdefault("verification", {})[size] = workload.verification
            save(results, args.results)  # a size measured is kept, whatever happens next
    results["serialization"] = serialization(args.work)
    print(save(results, args.results))


def save(results: dict, folder: Path) -> str:
    """Write results.json and RESULTS.md; return the report's text."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results, indent=1))
    text = write_report(results)
    (folder / "RESULTS.md").write_text(text)
    return text


if __name__ == "__main__":
    main()
