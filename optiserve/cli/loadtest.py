"""``loadtest`` and ``verify``: measure a server under load, and check a plan on a real one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from optiserve.cli._common import (
    Instances,
    MaxBatch,
    MaxDelayMs,
    Mlflow,
    Precision,
    Threads,
    mlflow_run,
    one_line_errors,
    out,
    pairs,
)


@one_line_errors
def loadtest(
    url: Annotated[str, typer.Argument(help="server base URL, e.g. http://127.0.0.1:8000")],
    model: Annotated[str, typer.Option(help="model name on the server")],
    rate: Annotated[float, typer.Option(help="requests per second")] = 50.0,
    duration: Annotated[float, typer.Option(help="seconds of scheduled sends")] = 10.0,
    arrival: Annotated[str, typer.Option(help="poisson, gamma or trace")] = "poisson",
    cv: Annotated[float, typer.Option(help="gamma arrivals: coefficient of variation")] = 2.0,
    trace: Annotated[Optional[Path], typer.Option(help="arrival trace: a text file of timestamps")] = None,  # noqa: UP045
    users: Annotated[int, typer.Option(help="concurrent senders (0: derived from the rate)")] = 0,
    p99_target_ms: Annotated[Optional[float], typer.Option(help="judge p99 < this, with 95% confidence")] = None,  # noqa: UP045
    seed: Annotated[int, typer.Option(help="schedule seed")] = 0,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write the result here")] = None,  # noqa: UP045
    predict_from: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="profile of the served model: also simulate this very schedule and record the prediction"),
    ] = None,
    precision: Precision = "fp32",
    threads: Threads = 1,
    max_batch: MaxBatch = 8,
    max_delay_ms: MaxDelayMs = 2.0,
    instances: Instances = 1,
    server_cpus: Annotated[
        int,
        typer.Option(help="with --predict-from: CPUs of the server (0: unknown; <= threads: front end shares them)"),
    ] = 0,
    per_request_ms: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(help="with --predict-from: server CPU per request besides inference (default: the profile's)"),
    ] = None,
    overhead_ms: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(help="with --predict-from: latency per request outside the server (default: the profile's)"),
    ] = None,
    overhead_from: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            help="with --predict-from: a light-load --json result made with --predict-from; its measured "
            "minus predicted latencies are the overhead distribution (instead of --overhead-ms)"
        ),
    ] = None,
    inputs: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help=".npz of real inputs keyed by input name (as for profile): the first sample is sent"),
    ] = None,
    encoding: Annotated[
        str,
        typer.Option(
            help="auto (binary past 4096 input elements), json, binary (inputs and outputs), grpc (with --grpc-port)"
        ),
    ] = "auto",
    grpc_port: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help="with --encoding grpc: the server's gRPC port on the URL's host (the URL gives metadata)"),
    ] = None,
) -> None:
    """Open-loop load test with Locust: latency counts from each request's scheduled time.

    With --predict-from, --precision, --threads, --max-batch, --max-delay-ms and --instances are the server's.
    """
    import json as _json
    import math

    import numpy as np

    from optiserve.errors import UsageError
    from optiserve.estimate.arrivals import make_arrivals
    from optiserve.serve.loadtest import CLIENT_BUSY_WARN, MAX_ERROR_RATE, MAX_REQUESTS, run_loadtest
    from optiserve.serve.verdict import p99_verdict

    if rate <= 0 or duration <= 0:
        raise UsageError("--rate and --duration must be positive")
    if encoding not in ("auto", "json", "binary", "grpc"):
        raise UsageError(f"unknown --encoding {encoding!r}; valid: auto, json, binary, grpc")
    if (encoding == "grpc") != (grpc_port is not None):
        raise UsageError("--encoding grpc and --grpc-port go together: the gRPC port to load, the URL for metadata")
    n = min(math.ceil(rate * duration), MAX_REQUESTS)
    stamps = None
    if trace is not None:
        if not trace.exists():
            raise UsageError(f"trace file not found: {trace}")
        try:
            stamps = np.loadtxt(trace, ndmin=1)
        except ValueError as exc:
            raise UsageError(f"{trace} is not a list of timestamps: {exc}") from None
    schedule = make_arrivals(arrival, rate, n, cv, seed, stamps)
    users = users or max(16, min(512, int(rate * 0.25) + 16))
    forecast = None
    if predict_from is not None:  # before the run: a bad profile must not waste a load test
        from optiserve.serve.prediction import ServedConfig
        from optiserve.serve.prediction import forecast as predict_schedule

        if server_cpus < 0:
            raise UsageError("--server-cpus must be >= 0")
        config = ServedConfig(precision, threads, max_batch, max_delay_ms, instances, server_cpus)
        forecast = predict_schedule(
            schedule, predict_from, config, per_request_ms, overhead_ms, overhead_from, seed, encoding
        )
    predicted = forecast.record if forecast is not None else None
    samples = None
    if inputs is not None:
        from optiserve.models.inputs import load_npz

        samples = load_npz(inputs)
    try:
        binary = None if encoding in ("auto", "grpc") else encoding == "binary"
        result = run_loadtest(url, model, schedule, users, samples=samples, binary=binary, grpc_port=grpc_port)
    except OSError as exc:
        raise UsageError(f"cannot reach {url}: {exc}") from None
    s = result.summary()
    out.print(
        f"{s['completed']}/{s['scheduled']} ok at {s['achieved_rate']:.1f} req/s (target {s['target_rate']:.1f}); "
        f"p50 {s['p50_ms']:.2f}  p95 {s['p95_ms']:.2f}  p99 {s['p99_ms']:.2f}  p99.9 {s['p999_ms']:.2f} ms "
        f"(from scheduled send); late sends {s['late_fraction']:.1%}; errors {s['errors'] or 'none'}; "
        f"client CPU {s['client_cpu_ms']:.2f} ms per request, busy {s['client_busy']:.0%}"
    )
    if "tail_server_ms" in s:
        out.print(
            f"slowest 1%: {s['tail_server_ms']:.2f} ms in the server (its Server-Timing), "
            f"{s['tail_outside_ms']:.2f} ms outside it (the client, the network)"
        )
    if result.client_busy > CLIENT_BUSY_WARN:
        out.print(
            f"[yellow]warning[/yellow]: the client was on a CPU {result.client_busy:.0%} of the run: its own "
            "queueing (responses handled one after another) is in these latencies; add a core or a second client"
        )
    if predicted is not None:
        s["predicted"] = predicted
        err_p99 = (predicted["p99_ms"] - s["p99_ms"]) / s["p99_ms"] if s["p99_ms"] else float("nan")
        out.print(
            f"PREDICTED for this schedule: p50 {predicted['p50_ms']:.2f}  p99 {predicted['p99_ms']:.2f} ms "
            f"(p99 error {err_p99:+.0%} vs measured)"
        )
    if not result.valid:
        out.print("[red]INVALID[/red]: the client fell behind its schedule (>1% late sends); add --users or a core")
    too_many_errors = result.error_rate > MAX_ERROR_RATE
    if too_many_errors:
        out.print(
            f"[red]FAIL[/red]: {result.failed} of {result.scheduled} requests failed ({result.error_rate:.1%}; "
            f"a run passes with at most {MAX_ERROR_RATE:.1%})"
        )
    if p99_target_ms is not None:
        v = p99_verdict(result.verdict_latencies(), p99_target_ms)  # failed requests count as over the target
        s["verdict"] = "fail" if too_many_errors else v.outcome
        out.print(v.line())
    if json_out:
        s["latency_ms"] = [round(float(x), 4) for x in result.latency_ms]
        s["index"] = [int(i) for i in result.index]
        # the server's side of each latency (Server-Timing), of which its batcher queue wait and its batch's call
        for key, ms in (("server_ms", result.server_ms), ("server_queue_ms", result.queue_ms),
                        ("server_call_ms", result.call_ms)):  # fmt: skip
            if ms.size and not np.isnan(ms).all():
                s[key] = [None if np.isnan(x) else round(float(x), 4) for x in ms]
        if forecast is not None:  # per scheduled request, without any overhead: what --overhead-from subtracts
            s["predicted_service_ms"] = [round(float(x), 4) for x in forecast.service_ms]
        json_out.write_text(_json.dumps(s))
    if not result.valid or s.get("verdict") == "fail" or too_many_errors:
        raise typer.Exit(1)


@one_line_errors
def verify(
    plan_file: Annotated[Path, typer.Argument(help="plan JSON from optiserve plan")],
    model: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help="NAME=FILE: the planned model (checked against the plan's digest; repeatable)"),
    ] = None,
    duration: Annotated[float, typer.Option(help="seconds of load per rate")] = 10.0,
    output: Annotated[Path, typer.Option("--output", "-o", help="folder for verify.json and the runs")] = Path(
        "verify"
    ),
    mlflow: Mlflow = None,
) -> None:
    """Run the plan's serving configuration here at its per-replica target and peak rates: predicted vs measured."""
    from optiserve.plan.result import read_plan
    from optiserve.serve.verify import verify_plan

    if mlflow:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow
    from optiserve.models.zoo import resolve_model

    files = {k: resolve_model(v) for k, v in pairs(model, "--model").items()}  # a file or models:/NAME/VERSION
    plan_doc = read_plan(plan_file)
    doc = verify_plan(plan_doc, files, duration, output)
    from optiserve.cli.trust import audit

    audit("verify", plan_doc, plan_file, [output / "verify.json"], {"verdict": doc["verdict"]})
    if mlflow:
        from optiserve._mlflow import verify_metrics

        mlflow_run(mlflow, "verify", verify_metrics({**doc, "plan_id": plan_doc.get("plan_id")}), [output])
    for m in doc["models"]:
        for r in m["rates"]:
            meas, pred = r["measured"], r["predicted"] or {}
            err = f"{r['p99_error']:+.0%}" if r["p99_error"] is not None else "-"
            lo, hi = meas.get("p99_ci_ms") or (None, None)
            ci = f" [{lo:.3g}, {'unbounded' if hi is None else f'{hi:.3g}'}]" if lo is not None else ""
            inside = {True: ", inside the interval", False: ", outside the interval"}.get(
                r.get("prediction_within_ci"), ""
            )
            out.print(
                f"{m['model']} {r['load']} {r['rate']:.1f} req/s ({r['requests']} requests): p99 measured "
                f"{meas['p99_ms']:.2f} ms{ci}, predicted {pred.get('p99_ms', float('nan')):.2f} ms ({err}{inside}); "
                f"errors {r['error_rate']:.1%}; {r['verdict'].upper()}"
            )
            own = r.get("server") or {}
            if own.get("mean_call_ms") is not None and pred.get("mean_call_ms") is not None:
                rows, want = own.get("mean_batch") or 0.0, pred.get("mean_batch") or 0.0
                out.print(
                    f"  the server's mean call {own['mean_call_ms']:.3g} ms over {rows:.3g} rows, "
                    f"predicted {pred['mean_call_ms']:.3g} ms over {want:.3g}"
                )
    out.print(f"verify: {doc['verdict'].upper()} ({output / 'verify.json'})")
    if doc["verdict"] == "fail":
        raise typer.Exit(1)
