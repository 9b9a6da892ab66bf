"""The folder job on Ray (`engine="ray"`), against the local engine on the same inputs.

Covers: a Ray instance started inside the process (through the CLI: exit status 1 for a corrupt
file, the instance shut down afterwards), a worker killed with SIGKILL mid-run (replaced, its
batch redone, every image reported exactly once), a worker's write error re-raised as the same
exception type as the local engine raises, a bad address and a missing Ray refused before any
image is read, and a two-node cluster started on this machine with `ray start`.

Reference: the local engine's outputs. Each actor runs the same program on the same padded batch
shape as the local engine, on the same CPU, but XLA compiles it for one intra-op thread there, and
that compile sums in another order: the maps are equal within float32 rounding (here up to
1.5e-7 of the map's scale; once byte-identical, no longer on jax 0.10), so they are compared at
1e-5 of their scale, and the panels drawn from them pixel by pixel within one colour-map step.
The sidecars are equal field for field (neither records the engine).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray")

from saliency_jax.app import cli, explain, inputs, ray_engine  # noqa: E402
from saliency_jax.app.explain import explain_paths  # noqa: E402
from saliency_jax.app.worker import Item  # noqa: E402
from saliency_jax.model import checkpoint, data  # noqa: E402

W = S = 64  # 4 occlusion windows on the 128x128 input: one cheap compile
OPTIONS = dict(methods="occlusion", window=W, stride=S, formats=("png", "npy"), progress=False)  # the CLI's order
N_IMAGES = 5
PNG_STEP = 8  # a rounding difference may move a pixel to the next of the colour map's 256 entries
CORRUPT = "corrupt.png"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ray-inputs")
    for i, img in enumerate(data.generate(N_IMAGES, split="test", size=48).images):
        Image.fromarray(np.asarray(img)).save(d / f"img{i}.png")
    (d / CORRUPT).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return d


@pytest.fixture(scope="module")
def loaded():
    return checkpoint.load()


@pytest.fixture(scope="module")
def reference(images, loaded, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ray-reference")
    r = explain_paths([images], out, model=loaded, batch_size=2, log=lambda line: None, **OPTIONS)
    assert len(r.done) == N_IMAGES and [Path(p).name for p, _ in r.failed] == [CORRUPT]
    return out


@pytest.fixture(scope="module")
def _ray_module():
    yield
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def in_process(_ray_module):
    """One Ray instance in this process, shared by the tests (RayEngine(address=None) uses it)."""
    if not ray.is_initialized():
        with warnings.catch_warnings():  # JAX warns about any fork; Ray forks and execs its processes
            warnings.simplefilter("ignore", RuntimeWarning)
            ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)


def _outputs(out: Path) -> dict[str, Path]:
    """The visible output files by name (temporary files and the lock are hidden)."""
    return {str(p.relative_to(out)): p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")}


def _sidecar(path: Path) -> dict:
    side = json.loads(path.read_text())
    side.pop("engine", None)  # were an engine recorded, it would legitimately differ
    return side


def assert_same_file(got: Path, want: Path) -> None:
    """Sidecars equal field for field, maps within float32 rounding, panels within a colour-map step."""
    if want.suffix == ".json":
        a, b = _sidecar(got), _sidecar(want)
        stats_a, stats_b = a.pop("maps", {}), b.pop("maps", {})  # each map's shape, min and max
        assert a == b and stats_a.keys() == stats_b.keys(), want.name
        for m, st in stats_b.items():
            assert stats_a[m]["shape"] == st["shape"], want.name
            scale = max(abs(st["min"]), abs(st["max"]))
            assert [stats_a[m]["min"], stats_a[m]["max"]] == pytest.approx([st["min"], st["max"]], rel=0,
                                                                            abs=1e-5 * scale), want.name
    elif want.suffix == ".npy":
        a, b = np.load(got), np.load(want)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * float(np.abs(b).max()), err_msg=want.name)
    else:  # the panels, drawn from maps equal within rounding
        a, b = (np.asarray(Image.open(p), np.int16) for p in (got, want))
        assert a.shape == b.shape and np.abs(a - b).max() <= PNG_STEP, want.name


def assert_same_outputs(out: Path, ref: Path) -> None:
    got, want = _outputs(out), _outputs(ref)
    got.pop("summary.json", None), want.pop("summary.json", None)  # the run summary names the engine
    assert sorted(got) == sorted(want)
    for name, path in want.items():
        if name != "index.html":
            assert_same_file(got[name], path)
    for name in want:
        if name.endswith(".npy"):  # and they are real maps
            assert np.load(got[name]).shape == (128, 128) and np.isfinite(np.load(got[name])).all()


# --------------------------------------------------------------------------- Ray inside the test process
#
# Ray started inside a process replaces Python's fault handler with its own for the rest of that
# process (after `ray.init(); ray.shutdown()` a segfault prints nothing). A crash later in the
# session then leaves no traceback, as happened in CI (exit 139, no Python frame). So the tests
# that start Ray inside the test process run in a child pytest process of their own, started by
# the one test the parent session runs from this group.

IN_CHILD = os.environ.get("SALIENCY_JAX_RAY_CHILD") == "1"
in_child = pytest.mark.skipif(not IN_CHILD, reason="runs in the child process of test_in_process_group_in_a_child")


@pytest.mark.slow
def test_in_process_group_in_a_child():
    if IN_CHILD:
        pytest.skip("this is the child")
    env = {**os.environ, "SALIENCY_JAX_RAY_CHILD": "1", "SALIENCY_JAX_LOCK_HELD": "1"}  # the parent holds the lock
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "not two_node"],
                         env=env, cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert " passed" in run.stdout and " failed" not in run.stdout, run.stdout[-3000:]


@in_child
@pytest.mark.slow
def test_cli_starts_ray_in_process_matches_local_and_exits_1_for_a_corrupt_file(images, reference, tmp_path, _ray_module):
    if ray.is_initialized():
        ray.shutdown()  # the engine must start (and stop) its own instance
    out = tmp_path / "out"
    status = cli.main(["explain", str(images), "--out", str(out), "--methods", "occlusion", "--window", str(W),
                       "--stride", str(S), "--batch-size", "2", "--no-progress", "--engine", "ray", "--workers", "2"])
    assert status == 1  # the corrupt file, reported and skipped as in the local engine
    assert not ray.is_initialized()
    assert_same_outputs(out, reference)


@in_child
@pytest.mark.slow
def test_killed_worker_is_replaced_and_every_image_is_done_exactly_once(in_process, images, loaded, reference,
                                                                        tmp_path):
    info = explain.run_info(loaded, methods="occlusion", window=W, stride=S, formats=("png", "npy"))
    items = [Item(p, p.name, inputs.sha256_file(p)) for p in sorted(images.iterdir())]
    seen, killed = [], []
    with ray_engine.RayEngine(workers=2) as engine:
        def on_outcome(outcome):
            seen.append(outcome)
            if not killed:  # the first image is back; the other worker has a batch in flight
                pid = engine.worker_pids()[0]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        engine.run(items, out=tmp_path, info=info, loaded=loaded, batch_size=2, on_outcome=on_outcome)  # as the reference
        stats = dict(engine.stats)
    assert killed and stats["deaths"] >= 1 and stats["redone"] >= 1, stats
    assert sorted(o.path for o in seen) == sorted(str(i.path) for i in items)  # each reported once, none lost
    assert {Path(o.path).name for o in seen if o.status == "failed"} == {CORRUPT}
    for o in seen:
        assert o.status == "failed" or o.sidecar == tmp_path / f"{Path(o.path).name}.json"
    ref = {k: v for k, v in _outputs(reference).items() if k not in ("index.html", "summary.json")}
    assert sorted(_outputs(tmp_path)) == sorted(ref)
    for name, path in ref.items():
        assert_same_file(tmp_path / name, path)


@in_child
@pytest.mark.slow
def test_a_worker_error_stops_the_run_as_the_local_engine_would(in_process, images, tmp_path):
    def blocked(out: Path) -> Path:  # a folder where the first map must go: writing it fails
        (out / "img0.png.occlusion.npy").mkdir(parents=True)
        return out

    with pytest.raises(Exception) as local:
        explain_paths([images], blocked(tmp_path / "local"), batch_size=2, log=lambda line: None, **OPTIONS)
    with pytest.raises(Exception) as on_ray:
        explain_paths([images], blocked(tmp_path / "ray"), batch_size=2, log=lambda line: None, engine="ray",
                      workers=1, **OPTIONS)
    assert isinstance(local.value, OSError)
    assert type(on_ray.value) is type(local.value), (on_ray.value, local.value)  # not a RayTaskError
    assert not isinstance(on_ray.value, ray.exceptions.RayError)


# --------------------------------------------------------------------------- refused before reading


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def no_reading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an image was read")

    monkeypatch.setattr(inputs, "sha256_file", refuse)
    monkeypatch.setattr(data, "load_resized", refuse)


@in_child  # ray.init on a bad address may install Ray's handlers before it fails
@pytest.mark.parametrize("address, error, message", [
    ("127.0.0.1:FREE", ConnectionError, r"`address` \(='127\.0\.0\.1:\d+'\): cannot connect"),
    ("no-such-host.invalid:6379", ConnectionError, r"`address` \(='no-such-host\.invalid:6379'\): cannot connect"),
    ("localhost", ValueError, r"`address` \(='localhost'\) must be None .* 'HOST:PORT'"),
    ("localhost:99999", ValueError, r"`address` \(='localhost:99999'\) .* port must be an integer in \[1, 65535\]"),
])
def test_a_bad_address_fails_clearly_before_any_image_is_read(images, loaded, tmp_path, no_reading, address, error,
                                                              message):
    address = address.replace("FREE", str(_free_port()))  # chosen when run (same test ids in every xdist worker)
    with pytest.raises(error, match=message):
        explain_paths([images], tmp_path / "out", model=loaded, engine="ray", address=address, **OPTIONS)
    assert not (tmp_path / "out" / "img0.png.json").exists()


def test_without_ray_the_engine_says_how_to_install_it(images, loaded, tmp_path, no_reading, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ImportError, match=r'pip install "saliency-jax\[ray\]"'):
        explain_paths([images], tmp_path / "out", model=loaded, engine="ray", **OPTIONS)


# --------------------------------------------------------------------------- two nodes on this machine


def _ray_cli(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("ray")), *args], env=env, timeout=timeout,
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def two_nodes(_ray_module):
    """A head and a second node, one CPU each, started with `ray start` and stopped with `ray stop`."""
    if ray.is_initialized():
        ray.shutdown()  # the in-process instance (the driver joins the cluster instead)
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="sjray", dir="/tmp")  # short: Ray's socket paths must stay under 108 bytes
    # A throwaway cluster on localhost: Ray's token authentication off (a Ray process keeps the token
    # it first loaded, so this test process could not take a fresh one after the in-process tests).
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    try:
        head = _ray_cli("start", "--head", f"--port={port}", "--num-cpus=1", f"--temp-dir={temp}",
                        "--include-dashboard=false", "--disable-usage-stats", env=env)
        assert head.returncode == 0, head.stdout + head.stderr
        node = _ray_cli("start", f"--address=127.0.0.1:{port}", "--num-cpus=1", env=env)
        assert node.returncode == 0, node.stdout + node.stderr
        yield f"127.0.0.1:{port}", env
    finally:
        _ray_cli("stop", env=env)
        shutil.rmtree(temp, ignore_errors=True)


def _explain_cli(images: Path, out: Path, address: str, env: dict) -> subprocess.CompletedProcess:
    """`saliency-jax explain --engine ray --address ...` in a process of its own, as a user runs it."""
    cmd = [sys.executable, "-m", "saliency_jax", "explain", str(images), "--out", str(out), "--methods", "occlusion",
           "--window", str(W), "--stride", str(S), "--batch-size", "2", "--no-progress", "--engine", "ray",
           "--address", address, "--workers", "2"]
    return subprocess.run(cmd, env=env, timeout=600, capture_output=True, text=True)


@pytest.mark.slow
def test_two_node_cluster_matches_the_local_engine(two_nodes, images, reference, tmp_path):
    address, env = two_nodes
    nodes = subprocess.run([sys.executable, "-c", "import ray; ray.init(address=%r, logging_level='ERROR'); "
                            "print(sum(n['Alive'] for n in ray.nodes()))" % address],
                           env=env, timeout=120, capture_output=True, text=True)
    assert nodes.stdout.split()[-1:] == ["2"], nodes.stdout + nodes.stderr  # one CPU each: a worker on each node
    run = _explain_cli(images, tmp_path / "out", address, env)
    assert run.returncode == 1, run.stdout + run.stderr  # the corrupt file, reported and skipped
    assert f"{N_IMAGES} explained" in run.stdout and CORRUPT in run.stderr
    assert_same_outputs(tmp_path / "out", reference)
    rerun = _explain_cli(images, tmp_path / "out", address, env)  # the sidecar rule: nothing redone
    assert f"0 explained, {N_IMAGES} already done" in rerun.stdout, rerun.stdout + rerun.stderr
