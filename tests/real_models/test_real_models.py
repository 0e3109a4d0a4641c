"""Real pretrained models end to end, as a user runs them: profile -> plan -> emit -> serve -> loadtest.

The models (PaddleOCR via rapidocr, silero VAD, ddddocr) each break one assumption
the synthetic zoo never tests:

* ppocr-cls: opset 11, ``x[-1, 3, ?, ?]`` (anonymous dims, fixed by ``--shape x=3,48,192``);
* ppocr-det: dynamic H and W (``--shape x=3,96,96``), a heat-map output;
* silero-vad: ``input[batch, sequence]``, ``state[2, batch, 128]`` (batch on axis 1)
  and ``sr``, a 0-d int64 scalar that is never batched;
* ddddocr-det: every dim fixed, batch 1 only (``--batch 1,4`` must not crash on 4).

Every command must exit 0 without a traceback, every requested precision must be
measured (or, for a batch the model cannot run, be a failed row with a one-line
reason), the plan's precision must pass the accuracy gate, and the served model
must answer well-shaped load-test requests and a tritonclient call.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from optiserve.profile.ceilings import best_seconds
from optiserve.profile.store import load_profile
from optiserve.types import Status
from tests.conftest import run_cli
from tests.real_models.conftest import REAL_MODELS, Prepared, wheel_model
from tests.real_models.inputs import (
    audio_chunks,
    det_pages,
    det_text_mask,
    ocr_lines,
    shapes,
    write_calib_and_eval,
)

PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8-static")
MAX_DROP = 0.05
PIPELINE = ("cls", "det", "vad", "dddet")  # rec: inputs checked only (its 6625-way output makes a slow sweep)
# Precisions allowed to come back as a failed row, per model: none, once the product handles these models.
ALLOWED_TO_FAIL: dict[str, set[str]] = {k: set() for k in PIPELINE}
LOAD_RATE, LOAD_SECONDS = 10, 2
# The load test's rate is at most this share of what the server gets through one request at a time:
# at 10 req/s the ddddocr detector's p50 was 64-109 ms on an Emerald Rapids guest, a loaded server, and
# on a slower CI machine its overload gate closed the listener (9 of 20 refused by the kernel); a
# latency-bounded server may rightly refuse near capacity, but here it must serve every request.
LOAD_SHARE = 0.3


def _cmd(args: tuple[str, ...] | list[str]) -> str:
    return "optiserve " + " ".join(str(a) for a in args)


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def _ok(
    proc: subprocess.CompletedProcess[str], args: tuple[str, ...] | list[str], *, allow: tuple[int, ...] = (0,)
) -> None:
    """Exit code in ``allow`` and no traceback; the message names the command and its last line."""
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, f"{_cmd(args)}: traceback: {_last_line(proc.stderr or proc.stdout)}"
    assert proc.returncode in allow, f"{_cmd(args)}: exit {proc.returncode}: {_last_line(proc.stderr or proc.stdout)}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _metrics(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        return r.read().decode()


def _requests_by_status(metrics: str) -> dict[str, float]:
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'^optiserve_requests_total\{status="(\d+)"\} ([0-9.e+]+)$', metrics, re.M)
    }


@dataclass
class Served:
    url: str
    proc: subprocess.Popen[str]
    log: Path


@dataclass
class Pipeline:
    """Each stage once per model per session, in order; a failed stage fails the later ones with its cause."""

    prepare: Callable[[str], Prepared]
    root: Path
    done: dict[tuple[str, str], Any] = field(default_factory=dict)
    servers: list[Served] = field(default_factory=list)

    def _stage(self, stage: str, key: str, fn: Callable[[], Any]) -> Any:
        k = (stage, key)
        if k not in self.done:
            try:
                self.done[k] = ("ok", fn())
            except BaseException as exc:
                if isinstance(exc, pytest.skip.Exception):
                    raise
                self.done[k] = ("failed", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                raise
        status, value = self.done[k]
        if status != "ok":
            pytest.fail(f"{stage} of {REAL_MODELS[key].name} failed earlier: {value}")
        return value

    def profile(self, key: str) -> tuple[Prepared, Path]:
        def run() -> tuple[Prepared, Path]:
            p = self.prepare(key)
            out = p.folder / "profile"
            args = [
                "profile", str(p.path),
                "--precision", ",".join(PRECISIONS),
                "--batch", "1,4",
                "--threads", "1",
                "--budget", "0.3", "--warmup", "0.3", "--min-samples", "10",
                *[a for s in p.model.shape for a in ("--shape", s)],
                "--inputs", str(p.eval),
                "--calibration", str(p.calib),
                "--max-accuracy-drop", str(MAX_DROP),
                "-o", str(out),
            ]  # fmt: skip
            _ok(run_cli(*args, cwd=p.folder, timeout=400), args)
            return p, out

        return self._stage("profile", key, run)  # type: ignore[no-any-return]

    def plan(self, key: str) -> tuple[dict[str, Any], Path]:
        def run() -> tuple[dict[str, Any], Path]:
            p, prof = self.profile(key)
            sla = p.folder / "sla.yaml"
            sla.write_text(
                "defaults:\n  regions: [EU]\n  spot: false\n  headroom: 0.2\n"
                f"models:\n  {p.model.name}:\n    rate: 20\n    peak_factor: 1.5\n"
                f"    p99_ms: 2000\n    max_accuracy_drop: {MAX_DROP}\n"
            )
            out = p.folder / "plan.json"
            args = ["plan", "--sla", str(sla), "--profile", f"{p.model.name}={prof}", "-o", str(out),
                    "--trials", "60", "--requests", "5000"]  # fmt: skip
            _ok(run_cli(*args, cwd=p.folder, timeout=300), args)
            return json.loads(out.read_text()), out

        return self._stage("plan", key, run)  # type: ignore[no-any-return]

    def emit(self, key: str) -> Path:
        def run() -> Path:
            p = self.prepare(key)
            _, plan_path = self.plan(key)
            out = p.folder / "deploy"
            args = ["emit", str(plan_path), "--target", "all", "-o", str(out), "--model", f"{p.model.name}={p.path}"]
            _ok(run_cli(*args, cwd=p.folder, timeout=120), args)
            return out

        return self._stage("emit", key, run)  # type: ignore[no-any-return]

    def serve(self, key: str) -> Served:
        def run() -> Served:
            p = self.prepare(key)
            args = [
                "serve", str(p.path),
                *[a for s in p.model.shape for a in ("--shape", s)],
                "--port", str(_free_port()), "--max-batch", str(p.model.max_batch), "--max-delay-ms", "2",
            ]  # fmt: skip
            return self.launch(args, p.folder / "serve.log")

        return self._stage("serve", key, run)  # type: ignore[no-any-return]

    def launch(self, args: list[str], log: Path) -> Served:
        """``optiserve serve ARGS`` in the background until /v2/health/ready (stopped at teardown)."""
        port = args[args.index("--port") + 1]
        with log.open("w") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "optiserve", *args],
                cwd=log.parent,
                stdout=fh,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, "COLUMNS": "200"},
            )
        url = f"http://127.0.0.1:{port}"
        served = Served(url, proc, log)
        self.servers.append(served)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return served
            except OSError:
                pass
            time.sleep(0.2)
        text = log.read_text()
        assert "Traceback" not in text, f"{_cmd(args)}: traceback: {_last_line(text)}"
        raise AssertionError(f"{_cmd(args)}: not ready (exit {proc.poll()}): {_last_line(text)}")

    def close(self) -> None:
        for s in self.servers:
            if s.proc.poll() is None:
                s.proc.terminate()
                try:
                    s.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    s.proc.kill()
                    s.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def pipeline(prepare: Callable[[str], Prepared], real_dir: Path) -> Iterator[Pipeline]:
    pl = Pipeline(prepare, real_dir)
    yield pl
    pl.close()


def _session(path: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------- the inputs themselves


def test_inputs_are_deterministic_and_split(tmp_path: Path) -> None:
    a = ocr_lines(4, seed=3, width=192)["x"]
    assert a.shape == (4, 3, 48, 192) and a.dtype == np.float32 and a.min() >= -1.0 and a.max() <= 1.0
    assert np.array_equal(a, ocr_lines(4, seed=3, width=192)["x"])
    calib, ev = write_calib_and_eval(tmp_path, "vad", n_calib=8, n_eval=6)
    with np.load(calib) as c, np.load(ev) as e:
        assert set(c.files) == {"input", "state", "sr"}
        assert c["input"].shape == (8, 512) and e["input"].shape == (6, 512)
        assert c["state"].shape == (2, 8, 128) and e["state"].shape == (2, 6, 128)  # samples on the batch axis 1
        assert c["sr"].shape == () and c["sr"].dtype == np.int64 and int(c["sr"]) == 16000
        assert not np.array_equal(c["input"][:6], e["input"])  # calibration and evaluation differ
    img = shapes(1, seed=0)["images"]
    assert img.shape == (1, 3, 416, 416) and img.dtype == np.float32
    assert det_pages(2, seed=0)["x"].shape == (2, 3, 96, 96)


def test_cls_prefers_upright_on_upright_text() -> None:
    s = _session(wheel_model(REAL_MODELS["cls"]))
    x = ocr_lines(16, seed=0, width=192, flip_every=2)["x"]  # odd rows upside down
    scores = s.run(None, {"x": x})[0]
    assert scores.shape == (16, 2)
    assert (scores[0::2].argmax(1) == 0).mean() >= 0.9 and (scores[1::2].argmax(1) == 1).mean() >= 0.9


def test_rec_reads_rendered_text() -> None:
    import onnx

    path = wheel_model(REAL_MODELS["rec"])
    probs = _session(path).run(None, {"x": ocr_lines(4, seed=0, width=320)["x"]})[0]
    assert probs.shape[0] == 4 and probs.shape[2] == 6625
    best = probs.argmax(2)
    assert ((best != 0).sum(1) >= 3).all()  # not all CTC blanks
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if "character" in meta:  # rapidocr ships the alphabet in the model: decode one line
        chars = ["", *meta["character"].splitlines(), " "]
        text = "".join(chars[c] for i, c in enumerate(best[0]) if c and (i == 0 or c != best[0][i - 1]))
        assert re.search(r"[A-Za-z0-9]{3}", text), text


def test_det_heat_map_follows_the_ink() -> None:
    x, ink = det_text_mask(96)
    heat = _session(wheel_model(REAL_MODELS["det"])).run(None, {"x": x})[0]
    assert heat.shape == (1, 1, 96, 96)
    assert heat[0, 0][ink].mean() > 0.3 > 0.1 > heat[0, 0][~ink].mean()


def test_vad_and_ddddocr_run_on_their_inputs() -> None:
    feeds = audio_chunks(8, seed=0)
    prob, state = _session(wheel_model(REAL_MODELS["vad"])).run(None, feeds)
    assert prob.shape == (8, 1) and state.shape == (2, 8, 128) and ((prob >= 0) & (prob <= 1)).all()
    out = _session(wheel_model(REAL_MODELS["dddet"])).run(None, shapes(1, seed=0))[0]
    assert out.shape == (1, 3549, 6) and out[0, :, 4].max() > 0.3  # something is found on the shapes


# ---------------------------------------------------------------- the product on them


def _failures(rows: list[Any]) -> str:
    """Failed rows as their distinct one-line reasons with counts (a sweep often fails 8 times the same way)."""
    reasons: dict[str, list[str]] = {}
    for m in rows:
        if m.status is not Status.OK:
            reasons.setdefault(m.error.strip().splitlines()[0] if m.error.strip() else "(no reason)", []).append(
                f"{m.config.precision} b={m.config.batch_size}"
            )
    return "; ".join(f"{why} [{', '.join(where)}]" for why, where in reasons.items()) or "none"


@pytest.mark.slow
@pytest.mark.parametrize("key", PIPELINE)
def test_profile(pipeline: Pipeline, key: str) -> None:
    p, out = pipeline.profile(key)
    prof = load_profile(out)
    rows = prof.measurements
    name = p.model.name
    problems: list[str] = []
    for m in rows:
        if "\n" in m.error.strip():
            problems.append(f"{m.config.label()}: error is not one line: {m.error[:200]!r}")
    allowed = ALLOWED_TO_FAIL[key]
    for prec in PRECISIONS:
        mine = [m for m in rows if str(m.config.precision) == prec]
        if not mine:
            problems.append(f"no row at all for {prec}")
            continue
        for m in mine:
            if m.status is not Status.OK:
                continue
            if m.accuracy is None or m.accuracy.synthetic:
                problems.append(f"{m.config.label()}: accuracy missing or synthetic despite --inputs/--calibration")
            if m.within_tolerance is None:
                problems.append(f"{m.config.label()}: no accuracy verdict despite --max-accuracy-drop")
    must_measure = [
        m for m in rows if str(m.config.precision) not in allowed and not (key == "dddet" and m.config.batch_size != 1)
    ]
    if any(m.status is not Status.OK for m in must_measure):
        problems.append(f"failed rows: {_failures(must_measure)}")
    layout = prof.meta.get("layout") or {}
    axes = {t["name"]: t["batch_axis"] for t in layout.get("inputs", [])}
    if key == "dddet":  # fixed batch 1: batch 4 is skipped or a failed row saying why, never measured
        if layout.get("fixed_batch") != 1:
            problems.append(f"layout should have fixed_batch 1: {layout}")
        for m in rows:
            if m.config.batch_size == 4 and (m.status is Status.OK or not m.error.strip()):
                problems.append(f"{m.config.label()}: batch 4 of a fixed-batch-1 model {m.status}, no reason")
    elif {m.config.batch_size for m in rows} != {1, 4}:
        problems.append(f"batch sizes profiled: {sorted({m.config.batch_size for m in rows})}, want [1, 4]")
    if key == "vad" and axes != {"input": 0, "state": 1, "sr": None}:
        problems.append(f"inferred batch axes {axes}, want input 0, state 1, sr none")
    if key in ("cls", "det"):
        shape = {t["name"]: t["shape"] for t in layout.get("inputs", [])}.get("x")
        want = [1, 3, 48, 192] if key == "cls" else [1, 3, 96, 96]
        if shape != want:
            problems.append(f"layout shape of x {shape}, want {want}")
    if key == "cls":  # class scores: drift judged as changed top-1 answers
        fp32 = [m for m in rows if str(m.config.precision) == "fp32" and m.accuracy is not None]
        if fp32 and fp32[0].accuracy.drop_metric != "top1-disagreement":
            problems.append(f"cls [N, 2] scores judged by {fp32[0].accuracy.drop_metric}, want top1-disagreement")
    assert not problems, f"{name}: " + " | ".join(problems)


@pytest.mark.slow
@pytest.mark.parametrize("key", PIPELINE)
def test_plan_and_emit(pipeline: Pipeline, key: str) -> None:
    plan, _ = pipeline.plan(key)
    p, prof_dir = pipeline.profile(key)
    (doc,) = plan["models"]
    assert doc["model"] == p.model.name and doc["feasible"], doc.get("closest_miss")
    chosen = doc["chosen"]
    drop = chosen["accuracy_drop"]
    assert drop is not None and drop <= MAX_DROP, chosen
    rows = [m for m in load_profile(prof_dir).measurements if str(m.config.precision) == chosen["precision"]]
    assert rows and all(m.within_tolerance for m in rows if m.status is Status.OK), (
        f"{p.model.name}: plan chose {chosen['precision']}, outside the accuracy gate in the profile"
    )
    if key == "dddet":
        assert chosen["max_batch"] == 1, chosen

    deploy = pipeline.emit(key)
    name = p.model.name
    for rel in (f"k8s/{name}.yaml", f"kserve/{name}.yaml", f"triton/{name}/config.pbtxt"):
        assert (deploy / rel).is_file(), (
            f"emit wrote no {rel}: {sorted(str(x.relative_to(deploy)) for x in deploy.rglob('*'))}"
        )
    assert list((deploy / "triton" / name).glob("*/model.onnx")), "no model in the Triton repository"
    cfg = _triton_config(deploy / "triton" / name / "config.pbtxt")
    dims = {t.name: list(t.dims) for t in cfg.input}
    if key == "vad":  # Triton batches axis 0 of every input: a batch on axis 1 needs max_batch_size 0, full dims
        assert cfg.max_batch_size == 0, (
            f"state's batch is axis 1, Triton config says max_batch_size {cfg.max_batch_size}"
        )
        assert dims["state"] == [2, -1, 128] and dims["input"][-1] in (-1, 512), dims
        sr = next(t for t in cfg.input if t.name == "sr")
        assert list(sr.dims) in ([], [1]) and (not sr.dims or list(sr.reshape.shape) == []), sr
    elif key == "dddet":
        full = ([cfg.max_batch_size] if cfg.max_batch_size else []) + dims["images"]
        assert full == [1, 3, 416, 416], (cfg.max_batch_size, dims)
    else:
        assert cfg.max_batch_size >= 1 and dims["x"][0] == 3 and len(dims["x"]) == 3, (cfg.max_batch_size, dims)


@pytest.mark.slow
@pytest.mark.parametrize("key", PIPELINE)
def test_emitted_deployment_serves_what_was_profiled(pipeline: Pipeline, key: str) -> None:
    """The emitted Deployment's own ``optiserve serve`` arguments, run here: the server starts (the
    digest matches, the shapes and batch axes it needs are in the args) and its answers at the plan's
    precision stay within the accuracy gate the profile measured on the same eval inputs."""
    import yaml

    deploy = pipeline.emit(key)
    p = pipeline.prepare(key)
    plan, _ = pipeline.plan(key)
    chosen = plan["models"][0]["chosen"]
    name = p.model.name
    docs = [d for d in yaml.safe_load_all((deploy / "k8s" / f"{name}.yaml").read_text()) if d]
    dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)
    (container,) = [c for c in dep["spec"]["template"]["spec"]["containers"] if "serve" in c.get("args", [])]
    args = [str(a) for a in container["args"]]
    assert args[0] == "serve" and args[args.index("--precision") + 1] == chosen["precision"], args
    if "--prebuilt" in args:  # the pod's model is the measured variant emit bundled (--expect-sha256 checks it)
        (bundled,) = (deploy / "models" / name).glob(f"{name}.{chosen['precision']}.onnx")
        args[1] = str(bundled)
    else:
        args[1] = str(p.path)  # the pod's /models/NAME.onnx is this file (same bytes: --expect-sha256 checks it)
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(_free_port())
    served = pipeline.launch(args, p.folder / "deployment-serve.log")
    try:
        with np.load(p.eval) as z:
            ev = {k: z[k] for k in z.files}
        n = 2 if key == "dddet" else len(ev["input" if key == "vad" else "x"])  # every eval sample
        ref = _session(p.path)
        got, want = [], []
        for i in range(n):
            one = {k: (v if v.ndim == 0 else np.take(v, [i], axis=1 if k == "state" else 0)) for k, v in ev.items()}
            got.append(next(iter(_infer_json(served.url, name, one).values())))
            want.append(ref.run(None, one)[0])
        g, w = np.concatenate(got), np.concatenate(want)
        assert g.shape == w.shape and np.isfinite(g).all()
        if key == "cls":  # class scores: the share of changed answers
            changed = float((g.argmax(1) != w.argmax(1)).mean())
            assert changed <= MAX_DROP, f"{name} served at {chosen['precision']}: {changed:.0%} of answers changed"
        elif key != "dddet":  # dddet: boxes judged by IoU in the profile; here only that it answers
            rel = float(np.linalg.norm(g - w) / (np.linalg.norm(w) or 1.0))
            # the profile's figure may be judged per output or per sample: a margin, not a second gate
            assert rel <= 1.25 * max(MAX_DROP, chosen["accuracy_drop"]), (
                f"{name} served at {chosen['precision']}: relative L2 {rel:.3f} vs fp32 (profile said "
                f"{chosen['accuracy_drop']:.4f}); is the served variant built like the profiled one?"
            )
    finally:
        served.proc.terminate()
        served.proc.wait(timeout=10)
    assert "Traceback" not in served.log.read_text(), _last_line(served.log.read_text())


@pytest.mark.slow
def test_served_int8_static_is_the_profiled_variant(pipeline: Pipeline) -> None:
    """``serve --precision int8-static`` must run the variant the profile judged (calibrated on the
    user's data), not one calibrated afresh on synthetic inputs: same answers on the same eval samples."""
    p, prof_dir = pipeline.profile("cls")
    rows = [m for m in load_profile(prof_dir).measurements if str(m.config.precision) == "int8-static"]
    profiled = next(m.accuracy.drop for m in rows if m.accuracy is not None)
    args = ["serve", str(p.path), "--shape", "x=3,48,192", "--precision", "int8-static",
            "--calibration", str(p.calib), "--port", str(_free_port()), "--max-batch", "8"]  # fmt: skip
    served = pipeline.launch(args, p.folder / "int8-serve.log")
    try:
        with np.load(p.eval) as z:
            x = z["x"]
        out = str(_session(p.path).get_outputs()[0].name)
        got = np.concatenate(
            [_infer_json(served.url, p.model.name, {"x": x[i : i + 8]})[out] for i in range(0, len(x), 8)]
        )
    finally:
        served.proc.terminate()
        served.proc.wait(timeout=10)
    want = _session(p.path).run(None, {"x": x})[0]
    changed = float((got.argmax(1) != want.argmax(1)).mean())
    assert abs(changed - profiled) <= 1 / len(x), (
        f"{_cmd(args)}: {changed:.1%} of answers changed vs fp32, the profiled int8-static variant {profiled:.1%}: "
        "the server builds its own int8-static variant (synthetic calibration?), not the one the profile measured"
    )


def _triton_config(path: Path) -> Any:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


SENT_SHAPES = {  # one load-test request: the batch axis at 1, every open dim resolved, scalars as they are
    "cls": {"x": [1, 3, 48, 192]},
    "det": {"x": [1, 3, 96, 96]},
    "vad": {"input": [1, 512], "state": [2, 1, 128], "sr": []},
    "dddet": {"images": [1, 3, 416, 416]},
}
BATCH_AXES = {"cls": {"x": 0}, "det": {"x": 0}, "vad": {"input": 0, "state": 1, "sr": None}, "dddet": {"images": 0}}


def _sent_shapes(url: str, name: str) -> dict[str, list[int]]:
    """The shapes of the request ``optiserve loadtest`` sends (its own payload builder, from the server's metadata)."""
    from optiserve.serve.loadtest import payload_for

    body, headers = payload_for(url, name, binary=True)
    header = json.loads(body[: int(headers["Inference-Header-Content-Length"])])
    return {i["name"]: i["shape"] for i in header["inputs"]}


@pytest.mark.slow
@pytest.mark.parametrize("key", PIPELINE)
def test_serve_and_loadtest(pipeline: Pipeline, key: str, tmp_path: Path) -> None:
    served = pipeline.serve(key)
    p = pipeline.prepare(key)
    problems: list[str] = []
    with np.load(p.eval) as z:  # one real sample (batch 1): timed here, compared with ONNX Runtime below
        sample = {k: (z[k] if z[k].ndim == 0 else np.take(z[k], [0], axis=1 if k == "state" else 0)) for k in z.files}
    rate = _load_rate(served.url, p.model.name, sample)
    before = _requests_by_status(_metrics(served.url))
    out = tmp_path / "load.json"
    args = ["loadtest", served.url, "--model", p.model.name, "--rate", str(rate),
            "--duration", str(LOAD_SECONDS), "--json", str(out)]  # fmt: skip
    proc = run_cli(*args, cwd=tmp_path, timeout=120)
    _ok(proc, args, allow=(0, 1))
    assert out.is_file(), f"{_cmd(args)}: no result written: {_last_line(proc.stderr or proc.stdout)}"
    r = json.loads(out.read_text())
    # a busy 2-core machine may push sends late: then INVALID and exit 1, never a silent pass
    if proc.returncode != (0 if r["valid"] else 1):
        problems.append(f"exit {proc.returncode} for a {'valid' if r['valid'] else 'invalid'} run")
    if r["errors"] or r["completed"] != r["scheduled"] or r["scheduled"] != rate * LOAD_SECONDS:
        problems.append(f"{r['completed']}/{r['scheduled']} ok at {rate} req/s, errors {r['errors']}")
    after = _requests_by_status(_metrics(served.url))
    ok = after.get("200", 0) - before.get("200", 0)
    refused = {s: n - before.get(s, 0) for s, n in after.items() if s != "200" and n - before.get(s, 0) > 0}
    if ok != r["scheduled"] or refused:
        problems.append(f"server /metrics counted {ok:g} ok and refused {refused}")
    # the load test builds its requests from the server's advertised layout: resolved shapes, batch axis per input
    meta = _get_json(f"{served.url}/v2/models/{p.model.name}")
    layout = {t["name"]: t for t in ((meta.get("parameters") or {}).get("layout") or {}).get("inputs", [])}
    axes = {n: t.get("batch_axis") for n, t in layout.items()}
    if axes != BATCH_AXES[key]:
        problems.append(f"served layout batch axes {axes}, want {BATCH_AXES[key]}")
    sent = _sent_shapes(served.url, p.model.name)
    if sent != SENT_SHAPES[key]:
        problems.append(f"load-test requests have shapes {sent}, want {SENT_SHAPES[key]}")
    # one real sample through the server equals ONNX Runtime on the same sample
    want = _session(p.path).run(None, sample)
    try:
        got = _infer_json(served.url, p.model.name, sample)
        for w, (oname, g) in zip(want, got.items(), strict=True):
            if g.shape != w.shape or not np.allclose(g, w, atol=1e-4, rtol=1e-3):
                problems.append(f"output {oname}: {g.shape} differs from ONNX Runtime's {w.shape}")
    except urllib.error.HTTPError as exc:
        problems.append(f"one real sample refused: {exc.code} {exc.read().decode()[:200]}")
    text = served.log.read_text()
    if "Traceback" in text:
        problems.append(f"server log has a traceback: {_last_line(text)}")
    assert not problems, f"{p.model.name}: " + " | ".join(problems)


def _load_rate(url: str, name: str, sample: dict[str, np.ndarray]) -> int:
    """LOAD_RATE, or less where the model is slow on this machine: ``LOAD_SHARE`` of the requests per
    second the server answers one at a time (the fastest of three after one), at least 2 req/s."""
    best = best_seconds(lambda: _infer_json(url, name, sample), 0.0, 3)
    return max(2, min(LOAD_RATE, math.floor(LOAD_SHARE / best)))


def _infer_json(url: str, name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One OIP v2 JSON request; outputs by name."""
    dtypes = {"float32": "FP32", "int64": "INT64"}
    body = {
        "inputs": [
            {"name": k, "shape": list(v.shape), "datatype": dtypes[v.dtype.name], "data": v.reshape(-1).tolist()}
            for k, v in feeds.items()
        ]
    }
    req = urllib.request.Request(
        f"{url}/v2/models/{name}/infer", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        outs = json.loads(r.read())["outputs"]
    return {o["name"]: np.asarray(o["data"], np.float32).reshape(o["shape"]) for o in outs}


@pytest.mark.slow
def test_tritonclient_infers_the_served_vad(pipeline: Pipeline) -> None:
    """A Triton client, as a KServe/Triton user would call it: state [2, 1, 128] and a 0-d sr."""
    import tritonclient.http as httpclient

    served = pipeline.serve("vad")
    p = pipeline.prepare("vad")
    with np.load(p.eval) as z:
        audio, sr = z["input"][1:2], z["sr"]
    state = np.zeros((2, 1, 128), np.float32)
    feeds = {"input": audio, "state": state, "sr": sr}
    client = httpclient.InferenceServerClient(url=served.url.removeprefix("http://"))
    try:
        assert client.is_server_ready() and client.is_model_ready(p.model.name)
        ins = []
        for name, arr in feeds.items():
            dt = {"float32": "FP32", "int64": "INT64"}[arr.dtype.name]
            t = httpclient.InferInput(name, list(arr.shape), dt)
            t.set_data_from_numpy(arr)
            ins.append(t)
        res = client.infer(p.model.name, ins, outputs=[httpclient.InferRequestedOutput("output"),
                                                       httpclient.InferRequestedOutput("stateN")])  # fmt: skip
        prob, state_n = res.as_numpy("output"), res.as_numpy("stateN")
    finally:
        client.close()
    want_prob, want_state = _session(p.path).run(None, feeds)
    assert prob.shape == (1, 1) and state_n.shape == (2, 1, 128)
    np.testing.assert_allclose(prob, want_prob, atol=1e-5)
    np.testing.assert_allclose(state_n, want_state, atol=1e-5)
