"""Real processes on loopback for the benchmarks: broker, participants, aggregators, references.

Everything is started through its command line (``python -m participants``, ``python -m
aggregator serve``, ``python -m benchmarks.refservers``) and stopped when the cluster closes,
whatever happened. Participants get their state the real way: orders placed through the order
service and carried by the saga.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from aggregator import load_definition
from order_saga import SAMPLES
from order_saga.broker import MosquittoBroker, NatsCluster, free_port

KINDS = ("order", "payment", "inventory", "shipping")


def http_json(url: str, body: dict[str, Any] | None = None, timeout: float = 10.0) -> tuple[int, Any]:
    """A small blocking HTTP client for set-up and counters."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def http_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


#: The distribution's libfaketime (Debian's package ``libfaketime``), which shifts a process's clock.
LIBFAKETIME = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))), None)


def skewed_clock(offset_s: float) -> dict[str, str]:
    """The environment that sets a process's wall clock ``offset_s`` seconds off (its monotonic
    clock is left alone); :data:`LIBFAKETIME` must be there."""
    if LIBFAKETIME is None:
        raise RuntimeError("a skewed clock needs libfaketime (Debian's package libfaketime)")
    return {
        "LD_PRELOAD": LIBFAKETIME,
        "FAKETIME": f"{offset_s:+.0f}s",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_DONT_RESET": "1",
    }


class Cluster:
    """Owns every process it starts; ``with Cluster() as c:`` stops them all on exit."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="bench-")
        self.dir = Path(self._tmp.name)
        self._procs: list[subprocess.Popen[bytes]] = []
        #: The process serving each participant's, aggregator's and reference's base URL.
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.broker: MosquittoBroker | NatsCluster | None = None
        self._n = 0
        self._how: dict[int, tuple[list[str], str, dict[str, str] | None]] = {}
        """pid → (arguments, log name, added environment)."""

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(10)  # a --workers supervisor waits up to its workers' grace period
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.broker is not None:
            self.broker.close()
        self._tmp.cleanup()

    def start_broker(self, kind: str = "mosquitto") -> str:
        """Start the broker: one Mosquitto, or (``kind="nats"``) a 3-node NATS JetStream cluster."""
        (self.dir / "broker").mkdir(exist_ok=True)
        if kind == "nats":
            self.broker = NatsCluster(3, workdir=self.dir / "broker")
        else:
            self.broker = MosquittoBroker(workdir=self.dir / "broker")
        self.broker.start()
        return str(self.broker.url)

    def _spawn(
        self, args: list[str], name: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, *args],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env} if env else None,
        )
        self._procs.append(proc)
        self._how[proc.pid] = (args, name, env)
        return proc

    def kill(self, url: str) -> None:
        """SIGKILL the process serving ``url`` (a crash); :meth:`restart` starts it again on its port and data."""
        proc = self.procs[url]
        proc.kill()
        proc.wait()

    def restart(self, url: str, path: str = "/readyz") -> None:
        """Start the process that served ``url`` again, as it was started (same port, same database)."""
        old = self.procs[url]
        with contextlib.suppress(ProcessLookupError):
            old.kill()  # if it still runs: one process per port
        old.wait()
        args, name, env = self._how[old.pid]
        self.procs[url] = self._spawn(args, name, env)
        self._wait(url, path)

    def stop(self, url: str) -> None:
        """Stop the aggregator or reference serving ``url`` (SIGTERM, as at the end)."""
        proc = self.procs.pop(url)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def pid(self, url: str) -> int:
        """The id of the process this cluster started to serve ``url`` (a participant, an aggregator, a reference).

        Under ``workers > 1`` it is the supervisor's, which serves nothing itself.
        """
        return self.procs[url].pid

    def _wait_line(self, name: str, needle: str, timeout: float = 60.0) -> None:
        """Wait until process ``name`` has printed ``needle`` (its start-up line) to its log."""
        log = self.dir / f"{name}.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in log.read_text(errors="replace"):
                return
            time.sleep(0.05)
        raise TimeoutError(f"{name} did not print {needle!r}; logs in {self.dir}")

    def _wait(self, url: str, path: str = "/readyz", timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if http_json(url + path, timeout=1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{url}{path} not ready; logs in {self.dir}")

    def saga(
        self,
        *,
        prefix: str,
        count: int = 1,
        only: dict[str, dict[str, float]] | None = None,
        flags: dict[str, list[str]] | None = None,
        env: dict[str, dict[str, str]] | None = None,
        **faults: float,
    ) -> list[dict[str, str]]:
        """``count`` groups of the four participants, each group on its own topic prefix.

        ``faults`` apply to every participant; ``only`` adds faults to some kinds; ``flags`` adds
        command-line flags to some kinds (``{"*": [...]}`` to all); ``env`` adds environment
        variables to some kinds (e.g. :func:`skewed_clock`).
        """
        assert self.broker is not None
        groups = []
        for g in range(count):
            group = {}
            for kind in KINDS:
                self._n += 1
                port = free_port()
                args = [
                    "-m", "participants", kind, "--port", str(port), "--broker", str(self.broker.url),
                    "--prefix", f"{prefix}{g}", "--db", str(self.dir / f"p{self._n}.sqlite3"), "--log-level", "WARNING",
                ]  # fmt: skip
                for flag, value in {**faults, **(only or {}).get(kind, {})}.items():
                    args += [f"--{flag.replace('_', '-')}", str(value)]
                args += [*(flags or {}).get("*", []), *(flags or {}).get(kind, [])]
                group[kind] = f"http://127.0.0.1:{port}"
                self.procs[group[kind]] = self._spawn(args, f"{kind}-{self._n}", (env or {}).get(kind))
            groups.append(group)
        for group in groups:
            for url in group.values():
                self._wait(url)
        return groups

    def orchestrator(self, *, prefix: str) -> str:
        """``python -m participants orchestrator`` on the group's prefix; returns its base URL."""
        assert self.broker is not None
        self._n += 1
        port = free_port()
        args = [
            "-m", "participants", "orchestrator", "--port", str(port), "--broker", str(self.broker.url),
            "--prefix", prefix, "--db", str(self.dir / f"orchestrator{self._n}.sqlite3"), "--log-level", "WARNING",
        ]  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        self.procs[url] = self._spawn(args, f"orchestrator-{self._n}")
        self._wait(url)
        return url

    def place(self, groups: list[dict[str, str]], workflow_ids: list[str]) -> None:
        """Happy orders with these ids in every group; returns once every saga completed."""
        for group in groups:
            for wf in workflow_ids:
                status, _ = http_json(group["order"] + "/orders", SAMPLES["happy"].body(order_id=wf))
                assert status == 202, status
        deadline = time.monotonic() + 30 + len(workflow_ids) / 20
        for group in groups:
            for start in range(0, len(workflow_ids), 100):  # request lines stay short
                chunk = workflow_ids[start : start + 100]
                ids = "&".join(f"workflow_id={w}" for w in chunk)
                while time.monotonic() < deadline:
                    _, answer = http_json(f"{group['order']}/status?{ids}")
                    if answer and sum(s["state"] == "CONFIRMED" for s in answer["statuses"]) == len(chunk):
                        break
                    time.sleep(0.05)
                else:
                    raise TimeoutError("seeding orders did not complete")

    def aggregator(
        self,
        participants: dict[str, str],
        *,
        name: str,
        generic: bool = False,
        workers: int = 1,
        redrive: str = "off",
        **settings: Any,
    ) -> str:
        """``python -m aggregator serve`` with a generated definition; returns its base URL.

        ``workers > 1`` passes ``--workers``: a supervisor and that many serving processes on one
        port; this returns once the supervisor has printed its start-up line (every worker up).
        """
        port = free_port()
        path = self.dir / f"{name}.toml"
        path.write_text(definition_toml(participants, generic=generic, **settings))
        args = [
            "-m",
            "aggregator",
            "serve",
            "--config",
            str(path),
            "--port",
            str(port),
            "--log-level",
            "WARNING",
        ]
        if settings.get("freshness") == "events":
            assert self.broker is not None
            args += ["--broker", str(self.broker.url), "--prefix", settings.pop("prefix", "saga")]
        if workers > 1:
            args += ["--workers", str(workers)]
        if redrive != "off":
            args += ["--redrive", redrive]
        url = f"http://127.0.0.1:{port}"
        self.procs[url] = self._spawn(args, name)
        if workers > 1:
            self._wait_line(name, "aggregator: serving")
        self._wait(url)
        return url

    def process(self, args: list[str], *, name: str, port: int, ready: str = "/readyz") -> str:
        """Any server of this checkout, started as ``python ARGS`` and serving ``port`` on loopback;
        returns its base URL once ``ready`` answers 200 (logs in the cluster's directory as ``name``)."""
        url = f"http://127.0.0.1:{port}"
        self.procs[url] = self._spawn(args, name)
        self._wait(url, ready)
        return url

    def synthetic(
        self, shape: str, *, name: str = "", latency_ms: float = 0.0, jitter_ms: float = 0.0
    ) -> str:
        """A synthetic participant (:mod:`benchmarks.refservers` ``synthetic``): any id, from memory."""
        port = free_port()
        args = ["-m", "benchmarks.refservers", "synthetic", "--port", str(port), "--shape", shape]
        args += ["--name", name or shape, "--latency-ms", str(latency_ms), "--jitter-ms", str(jitter_ms)]
        return self.process(args, name=f"synthetic-{name or shape}-{port}", port=port, ready="/healthz")

    def aggregator_config(
        self, config: Path, participants: dict[str, str], *, name: str, freshness: str, prefix: str = "saga"
    ) -> str:
        """``python -m aggregator serve --config CONFIG`` with each participant's URL overridden
        (``--participant NAME=URL``); in ``events`` freshness on this cluster's broker."""
        port = free_port()
        args = ["-m", "aggregator", "serve", "--config", str(config), "--port", str(port)]
        args += ["--log-level", "WARNING", "--freshness", freshness]
        for participant, url in participants.items():
            args += ["--participant", f"{participant}={url}"]
        if freshness == "events":
            assert self.broker is not None
            args += ["--broker", str(self.broker.url), "--prefix", prefix]
        return self.process(args, name=name, port=port)

    def reference(self, kind: str, *, participants: list[str] = (), db: Path | None = None) -> str:  # type: ignore[assignment]
        port = free_port()
        args = ["-m", "benchmarks.refservers", kind, "--port", str(port)]
        for url in participants:
            args += ["--participant", url]
        if db is not None:
            args += ["--db", str(db)]
        url = f"http://127.0.0.1:{port}"
        self.procs[url] = self._spawn(args, f"ref-{kind}-{port}")
        self._wait(url, "/healthz")
        return url


def definition_toml(participants: dict[str, str], *, generic: bool, **settings: Any) -> str:
    """TOML for the packaged saga definition (or a generic one-rule definition) with these URLs."""
    settings.pop("prefix", None)
    packaged = load_definition()
    lines = ['name = "bench"']
    if not generic and packaged.initiator in participants:
        lines.append(f'initiator = "{packaged.initiator}"')
    lines.append("[settings]")
    for key, value in settings.items():
        lines.append(f"{key} = {json.dumps(value)}")
    for name, url in participants.items():
        lines += [f"[participants.{name}]", f'url = "{url}"', "timeout_ms = 2000"]
        declared = packaged.participants[name].states if name in packaged.participants else None
        if not generic and declared:
            lines.append(f"states = {json.dumps(declared)}")
    if generic:
        lines += ["[[rules]]", 'state = "SEEN"']
        return "\n".join(lines) + "\n"
    for rule in packaged.rules:
        lines.append("[[rules]]")
        if rule.when:
            inline = ", ".join(f"{k} = {json.dumps(v)}" for k, v in rule.when.items())
            lines.append(f"when = {{ {inline} }}")
        lines.append(f'state = "{rule.state}"')
        if rule.step:
            lines.append(f'step = "{rule.step}"')
        if rule.terminal:
            lines.append("terminal = true")
    for ordering in packaged.orderings:
        lines += ["[[orderings]]", f'part = "{ordering.part}"', f'requires = "{ordering.requires}"']
    return "\n".join(lines) + "\n"


def status_requests(urls: list[str]) -> dict[str, int]:
    """Status and batch calls each participant has served."""
    out = {}
    for url in urls:
        _, body = http_json(url + "/healthz")
        out[url] = body["counts"]["status_requests"] + body["counts"]["batch_requests"]
    return out


def metric_sum(url: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus metric's samples over all labels (or those with these label values)."""
    total = 0.0
    for line in http_text(url + "/metrics").splitlines():
        if re.match(rf"^{name}(\{{|\s)", line) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def drive(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the load driver process with ``spec`` and return its result."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks._driver", json.dumps(spec)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return dict(json.loads(out.stdout))
