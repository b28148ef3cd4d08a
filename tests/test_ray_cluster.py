"""`recsim-run data=logs` with `ray.address` pointing at a real two-node Ray cluster gives the
numbers of the single-process run, bit for bit (recsim/ope/distributed.py: per-member sums in
Ray tasks, one bootstrap in the driver).

The test starts the cluster itself (`ray start --head` and a second `ray start --address`, one
CPU each, `--node-ip-address=127.0.0.1`, a temporary Ray directory of its own so that no other
Ray on the machine finds it) and always stops it. Ray 2.60 turns 127.0.0.1 into the machine's
own address and its GCS listens on every interface, so the cluster has a token of its own
(RAY_AUTH_MODE=token, a fresh RAY_AUTH_TOKEN): only this test's processes can join it. Every
process that talks to the cluster is a subprocess with that environment. Each
`ray start --block` runs in a process session of its own: stopping signals those process
groups by id, never `ray stop`, which stops every Ray on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
PROBE = """
import sys, time, ray
ray.init(address=sys.argv[1], log_to_driver=False)
deadline = time.monotonic() + 120
while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.monotonic() < deadline:
    time.sleep(1)
@ray.remote(num_cpus=1)
def node_of(_):
    time.sleep(1.0)
    return ray.get_runtime_context().get_node_id()
# two one-CPU tasks at once on one-CPU nodes: both nodes run one
print(len([n for n in ray.nodes() if n["Alive"]]), len(set(ray.get([node_of.remote(i) for i in range(2)]))))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster_env(token: str) -> dict[str, str]:
    """The environment of every process of the cluster: its token; this checkout's code on the
    workers' path, as on the driver's."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
            "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "RAY_USAGE_STATS_ENABLED": "0",
            "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _start_node(args: list[str], temp_dir: str, env: dict, log: Path) -> subprocess.Popen:
    """`ray start ... --block` in a new session: its process group holds the node's processes."""
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}",
              "--object-store-memory=100000000", "--disable-usage-stats", "--block"]
    return subprocess.Popen([RAY, "start", *args, *common], env=env, start_new_session=True,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _stop(nodes: list[subprocess.Popen], temp_dir: str) -> None:
    """SIGTERM each node's process group, SIGKILL what is left after 10 s (a node drains for
    up to 30 s first: a test's cluster has nothing to drain); then any process still naming
    this cluster's directory (a worker outside the group), by pid."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        for node in nodes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(_group_alive(n.pid) for n in nodes):
            time.sleep(0.5)
    for node in nodes:
        node.wait(timeout=5)
    for pid in _processes_naming(temp_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _processes_naming(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if proc.name.isdigit() and text.encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
    return pids


@pytest.fixture
def cluster(tmp_path):
    """(address, its environment, its Ray directory) of a two-node cluster; always stopped."""
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths
    env, port = _cluster_env(secrets.token_hex(32)), _free_port()
    address = f"127.0.0.1:{port}"
    head_log, worker_log = tmp_path / "head.log", tmp_path / "worker.log"
    nodes = [_start_node(["--head", f"--port={port}", "--include-dashboard=false"], temp_dir,
                         env, head_log)]
    try:
        deadline = time.monotonic() + 120
        while not (Path(temp_dir) / "ray_current_cluster").exists():
            if nodes[0].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start --head failed:\n{head_log.read_text()}")
            time.sleep(0.5)
        nodes.append(_start_node([f"--address={address}"], temp_dir, env, worker_log))
        yield address, env, temp_dir
    finally:
        _stop(nodes, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _world_files(out: Path) -> dict[str, Path]:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from recsim.jobs.write_logs import eval_period, score_files
    from recsim.paths import CONF_DIR
    from recsim.world.logs import write_logs
    from recsim.world.world import build_world

    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose("config", overrides=["world=debug"])
    world = eval_period(build_world(instantiate(cfg.world)), cfg.ranker.train_fraction)
    return write_logs(world, out) | score_files(world, out, "parquet", False)


def _recsim_run(files: dict, out: Path, env: dict, *extra: str) -> subprocess.Popen:
    """`python -m recsim.jobs.run data=logs ...` (recsim-run) writing its report into `out`."""
    args = ["data=logs", *(f"data.{t}={files[t]}" for t in ("posts", "impressions", "members",
                                                            "candidates")),
            f"sim.control.scores={files['production']}",
            f"sim.treatment.scores={files['candidate']}", "sim.n_bootstrap=200",
            f"hydra.run.dir={out}_hydra", f"report.output_dir={out}", *extra]
    return subprocess.Popen([sys.executable, "-m", "recsim.jobs.run", *args], cwd=ROOT,
                            env={**env, "RECSIM_TRACKING": "false"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def _figures(report_dir: Path) -> list:
    report = json.loads((report_dir / "report.json").read_text())
    return ([(x["estimator"], x["lift"], x["ci_low"], x["ci_high"], x["p_value"])
             for x in report["lifts"]]
            + [(e["policy"], e["name"], e["value"], e["ci_low"], e["ci_high"])
               for e in report["estimates"]] + [report["support"], report["sim"]["ray_shards"]])


def test_data_logs_on_a_two_node_cluster_equals_the_local_run(cluster, tmp_path):
    address, env, temp_dir = cluster
    files = _world_files(tmp_path / "logs")
    local_env = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}

    probe = subprocess.run([sys.executable, "-c", PROBE, address], env=env, capture_output=True,
                           text=True, timeout=300, check=False)
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert probe.stdout.split()[-2:] == ["2", "2"]  # two nodes alive, each ran a task

    _finish(_recsim_run(files, tmp_path / "local", local_env))  # one process, no Ray
    run = _recsim_run(files, tmp_path / "cluster", env, "sim.ray_shards=4", f"ray.address={address}")
    _finish(run)

    local, on_cluster = _figures(tmp_path / "local"), _figures(tmp_path / "cluster")
    assert local[-1] == 0 and on_cluster[-1] == 4
    assert on_cluster[:-1] == local[:-1]
    assert [x[0] for x in local[:4]] == ["replay", "ips", "clipped_ips", "snips"]
    # The run's driver joined this cluster (its core-driver log is in the cluster's session).
    logs = Path(temp_dir) / "session_latest" / "logs"
    assert list(logs.glob(f"python-core-driver-*_{run.pid}.log")), sorted(
        p.name for p in logs.iterdir())
