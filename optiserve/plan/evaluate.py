"""One candidate placement judged: replicas, nodes, cost, and latency at the target and peak rates.

Replicas are not searched: for a pod's config the fewest replicas that meet
the p99 at the peak rate follow from the simulator's highest rate per pod
(less the headroom), so searching them would only waste trials. The fleet is
then simulated at the target and at the peak rate, and the constraints the
optimizer sees are ``<= 0`` when met: p99 at peak over the target, accuracy
drop over the tolerance, memory over what a node or device holds.

On a CPU the runtime is a dimension too: a profile that measured ONNX Runtime
and OpenVINO side by side gives one ``CurveBuilder`` per CPU runtime (its own
curves, its own variants' accuracy), and a CPU candidate names the one it uses.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from optiserve.errors import SLAError
from optiserve.estimate.arrivals import poisson_arrivals
from optiserve.estimate.catalog import Catalog, Entry, Offer
from optiserve.estimate.served import served_path
from optiserve.estimate.service import ServiceModel
from optiserve.estimate.simulator import BatchingPolicy, max_rate_for_p99, simulate
from optiserve.estimate.source import usable
from optiserve.estimate.targets import CurveBuilder
from optiserve.plan.sla import ResolvedSLA, SearchSpace
from optiserve.types import Profile

SYSTEM_VCPUS = 0.5  # kept back per node for the kubelet and system daemons
FRONTEND_VCPUS = 0.5  # per pod, for the HTTP front end and batcher
POD_OVERHEAD_GIB = 0.25  # per pod: the server process without the model
GPU_POD_VCPUS = 2.0  # host cores a GPU pod asks for
MAX_REPLICAS = 10_000


@dataclass(frozen=True, order=True)
class Candidate:
    instance: str  # catalog key, provider:name
    precision: str
    threads: int  # per model instance on a CPU; 0 on an accelerator
    instances: int  # model instances per pod (per device on an accelerator)
    max_batch: int
    max_delay_ms: float
    runtime: str = ""  # a second CPU runtime whose curves it uses; "": the evaluator's main one

    def params(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PodFit:
    """One pod's resources on a node type and how many of them the node holds."""

    pod_vcpus: float
    pod_memory_gib: float
    pods_per_node: int
    mem_frac: float  # of what a node (or device) offers; > 1 does not fit
    runtime: str


@dataclass(frozen=True)
class LoadPoint:
    rate: float
    p50_ms: float
    p99_ms: float
    utilisation: float
    mean_batch: float
    p99_band_ms: tuple[float, float] | None = None  # p99 with every service time at the band's edges


@dataclass(frozen=True)
class Evaluation:
    candidate: Candidate
    runtime: str
    feasible: bool
    constraints: dict[str, float]  # name -> value, met when <= 0
    cost_usd_per_hour: float
    cost_usd_per_million: float
    offer: Offer | None
    replicas: int
    nodes: int
    pods_per_node: int
    pod_vcpus: float
    pod_memory_gib: float
    pod_rate: float  # highest rate one pod serves within the p99 (before headroom)
    at_target: LoadPoint
    at_peak: LoadPoint
    accuracy_drop: float | None
    predicted: bool
    band: float
    basis: str
    binding: str = ""
    verified_requests: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def violation(self) -> float:
        """How far from feasible: the largest positive constraint (0 when feasible)."""
        return max(0.0, *self.constraints.values())


def cpu_runtimes(profile: Profile, first: str) -> tuple[str, ...]:
    """The CPU runtimes with measured rows in ``profile``, ``first`` (the main one) first."""
    from optiserve.runtimes.registry import REGISTRY, get_runtime

    measured = {m.config.runtime for m in profile.ok if m.samples_ns and m.config.runtime in REGISTRY}
    cpu = sorted(r for r in measured if get_runtime(r).device == "cpu" and r != first)
    return (first, *cpu) if first in measured and get_runtime(first).device == "cpu" else ()


class Evaluator:
    """Judges candidates for one model on one catalog; results cached by candidate."""

    def __init__(
        self,
        sla: ResolvedSLA,
        builder: CurveBuilder,
        catalog: Catalog,
        space: SearchSpace,
        runtime: str = "onnxruntime-cpu",
        requests: int = 20_000,
        seed: int = 0,
        builders: Mapping[str, CurveBuilder] | None = None,
    ) -> None:
        self.sla, self.builder, self.catalog, self.space = sla, builder, catalog, space
        self.runtime, self.requests, self.seed = runtime, requests, seed
        # CPU runtime -> its curves; ``builder`` (of ``runtime``) also makes the accelerators' transfers
        self.builders: dict[str, CurveBuilder] = {runtime: builder, **(builders or {})}
        known = catalog.known_tags()
        for region in sla.regions:
            if region.lower() not in known:
                raise SLAError(
                    f"SLA model {sla.name!r}: unknown region {region!r}; known regions and tags: "
                    + ", ".join(sorted(known))
                )
        for name in sla.instance_types:
            catalog.get(name)  # an unknown name is an error that lists the valid ones, not an empty search
        self.entries: list[tuple[Entry, Offer]] = []
        self.excluded: list[tuple[str, str]] = []
        for e in catalog.entries:
            why = usable(e)
            if why is None and sla.providers and e.provider not in sla.providers:
                why = "provider not allowed by the SLA"
            if why is None and sla.instance_types and not ({e.name, e.key} & set(sla.instance_types)):
                why = "not in the SLA's instance_types"
            offer = catalog.offer(e, sla.regions, sla.spot) if why is None else None
            if why is None and offer is None:
                why = f"not offered in the allowed regions ({', '.join(sla.regions)})"
            if why is not None:
                self.excluded.append((e.key, why))
            else:
                assert offer is not None
                self.entries.append((e, offer))
        self._by_key = {e.key: (e, o) for e, o in self.entries}
        self._cache: dict[Candidate, Evaluation] = {}
        self._base = poisson_arrivals(1.0, requests, seed)

    # the space
    @property
    def cpu_runtimes(self) -> tuple[str, ...]:
        return tuple(self.builders)

    def builder_for(self, c: Candidate) -> CurveBuilder:
        """The curves of the candidate's runtime (the main builder for an accelerator)."""
        return self.builders.get(c.runtime, self.builder)

    @property
    def precisions(self) -> tuple[str, ...]:
        return tuple(sorted({p for b in self.builders.values() for p in b.precisions}))

    def accuracy_gate(self) -> list[dict[str, Any]]:
        """Per precision: its worst measured drop against the SLA's tolerance, and why
        it is refused (the ``accuracy`` constraint every candidate of it then misses)."""
        limit = self.sla.max_accuracy_drop
        out = []
        several = len(self.builders) > 1
        for runtime, b, p in ((r, rb, p) for r, rb in self.builders.items() for p in rb.precisions):
            drop, a = b.accuracy_drop(p), b.accuracy_report(p)
            ok = drop is not None and drop <= limit
            if drop is None or a is None:
                why = "accepted: fp32 is the reference" if ok else "refused: no accuracy measured for it"
            else:
                where = f" at {a.worst_output}{a.worst_group}" if a.worst_output else ""
                verdict, cmp = ("accepted", "<=") if ok else ("refused", ">")
                why = f"{verdict}: {a.drop_metric} {drop:.4g}{where} {cmp} {limit:g}"
                if a.synthetic:
                    why += " (synthetic inputs)"
                if not a.checks and p != "fp32":
                    why += "; profiled before every output was judged (first output only): re-profile"
            row = {"precision": p, "accuracy_drop": drop, "accepted": ok, "reason": why}
            out.append({"runtime": runtime, **row} if several else row)
        return out

    @property
    def threads(self) -> tuple[int, ...]:
        return tuple(sorted({t for b in self.builders.values() for p in b.precisions for t in b.threads(p)}))

    @property
    def batches(self) -> tuple[int, ...]:
        if self.space.max_batch:
            return tuple(sorted(self.space.max_batch))
        return tuple(
            sorted(
                {n for b in self.builders.values() for p in b.precisions for t in b.threads(p) for n in b.batches(p, t)}
            )
        )

    def candidates(self) -> Iterator[Candidate]:
        for e, _ in self.entries:
            runtimes = self.builders if e.accelerator is None else {self.runtime: self.builder}
            for name, rb in runtimes.items():
                r = "" if name == self.runtime else name
                for p in rb.precisions:
                    for t in rb.threads(p) if e.accelerator is None else (0,):
                        for i in self.space.instances:
                            for b in self.batches:
                                for d in self.space.max_delay_ms:
                                    yield Candidate(e.key, p, t, i, b, d, r)

    def normalise(self, c: Candidate) -> Candidate:
        """The candidate a sampler's raw choice means: threads and a runtime only on CPUs,
        a runtime that profiled this precision (the first that did, if the one chosen did
        not), and a thread count it was profiled with."""
        entry, _ = self._by_key[c.instance]
        if entry.accelerator is not None:
            return Candidate(c.instance, c.precision, 0, c.instances, c.max_batch, c.max_delay_ms)
        runtime = c.runtime if c.runtime in self.builders else self.runtime
        if c.precision not in self.builders[runtime].precisions:
            runtime = next((r for r, b in self.builders.items() if c.precision in b.precisions), runtime)
        profiled = self.builders[runtime].threads(c.precision)
        t = c.threads if c.threads in profiled else min(profiled, key=lambda x: (abs(x - c.threads), x))
        canonical = "" if runtime == self.runtime else runtime  # one candidate, one cache entry
        return Candidate(c.instance, c.precision, t, c.instances, c.max_batch, c.max_delay_ms, canonical)

    # judging
    def _fleet(self, service: ServiceModel, policy: BatchingPolicy, rate: float, base: Any) -> LoadPoint:
        r = simulate(base / rate, service, policy, self.seed)
        return LoadPoint(rate, r.percentile_ms(0.50), r.percentile_ms(0.99), r.utilisation, float(r.batch_sizes.mean()))

    def evaluate(self, c: Candidate) -> Evaluation:
        c = self.normalise(c)
        if c in self._cache:
            return self._cache[c]
        ev = self._evaluate(c, self._base, band_edges=False)
        self._cache[c] = ev
        return ev

    def judged(self) -> list[Evaluation]:
        """Every candidate judged so far (the search's, from the cache)."""
        return list(self._cache.values())

    def verify(self, c: Candidate, requests: int, seed: int) -> Evaluation:
        """The same judgement with more requests and another random stream, band edges included."""
        return self._evaluate(self.normalise(c), poisson_arrivals(1.0, requests, seed), band_edges=True)

    def _evaluate(self, c: Candidate, base: Any, band_edges: bool) -> Evaluation:
        entry, offer = self._by_key[c.instance]
        sla, builder = self.sla, self.builder_for(c)
        curve = builder.curve(entry, c.precision, c.threads or 1, c.instances if entry.accelerator else 1)
        terms, serving_basis = builder.serving(entry, sla.encoding)  # the deployed server's own cost
        service, pod = served_path(curve.service, terms, c.max_batch, c.max_delay_ms / 1e3, c.instances)
        fit = self._fit(entry, c, curve.memory_gib)
        pod_rate = max_rate_for_p99(service, pod, sla.p99_ms, n=min(self.requests, base.size), seed=self.seed)
        replicas, capped = self._replicas(pod_rate, service.capacity(c.max_batch, c.instances))
        nodes = math.ceil(replicas / fit.pods_per_node) if fit.pods_per_node > 0 else MAX_REPLICAS
        fleet = replace(pod, replicas=replicas)
        at_target = self._fleet(service, fleet, sla.rate, base)
        at_peak = self._fleet(service, fleet, sla.peak_rate, base)
        if band_edges and curve.band > 0:
            at_target = self._with_band(at_target, service, fleet, curve.band, base)
            at_peak = self._with_band(at_peak, service, fleet, curve.band, base)
        drop = builder.accuracy_drop(c.precision)
        unsafe = builder.int8_unsafe_on(entry, c.precision, c.threads or 1)
        if unsafe:  # the profile's accuracy is not this CPU's: unknown, so refused like an unmeasured one
            drop = None
        constraints = {
            "p99": at_peak.p99_ms / sla.p99_ms - 1,
            "accuracy": (1.0 if drop is None else drop - sla.max_accuracy_drop),
            "memory": fit.mem_frac - 1 if fit.pods_per_node > 0 else max(fit.mem_frac - 1, 1.0),
        }
        if capped:  # the fleet the SLA needs is larger than any this planner sizes
            constraints["replicas"] = sla.peak_rate / (MAX_REPLICAS * max(pod_rate * (1 - sla.headroom), 1e-12)) - 1
        feasible = all(v <= 0 for v in constraints.values())
        cost = nodes * offer.usd_per_hour
        return Evaluation(
            candidate=c,
            runtime=fit.runtime,
            feasible=feasible,
            constraints=constraints,
            cost_usd_per_hour=cost,
            cost_usd_per_million=cost / (sla.rate * 3600) * 1e6,
            offer=offer,
            replicas=replicas,
            nodes=nodes,
            pods_per_node=fit.pods_per_node,
            pod_vcpus=fit.pod_vcpus,
            pod_memory_gib=fit.pod_memory_gib,
            pod_rate=pod_rate,
            at_target=at_target,
            at_peak=at_peak,
            accuracy_drop=drop,
            predicted=curve.predicted,
            band=curve.band,
            basis=f"{curve.basis}; {serving_basis}",
            binding=self._binding(constraints, feasible, replicas, pod_rate),
            verified_requests=int(base.size) if band_edges else 0,
            extra={**({"encoding": terms.encoding} if terms else {}), **({"accuracy_note": unsafe} if unsafe else {})},
        )

    def _fit(self, entry: Entry, c: Candidate, instance_gib: float) -> PodFit:
        """What one pod asks for and how many fit a node (memory: host RAM, or device memory)."""
        inst = entry.instance
        if entry.accelerator is not None:
            acc = entry.accelerator
            per_node = min(acc.count, math.floor((inst.vcpus - SYSTEM_VCPUS) / GPU_POD_VCPUS))
            mem_frac = c.instances * instance_gib / acc.memory_gib
            return PodFit(GPU_POD_VCPUS, POD_OVERHEAD_GIB + 2.0, per_node, mem_frac, "onnxruntime-tensorrt")
        pod_vcpus = c.instances * c.threads + FRONTEND_VCPUS
        pod_mem = c.instances * instance_gib + POD_OVERHEAD_GIB
        alloc_mem = inst.memory_gib * 0.9 - 0.5
        by_cpu = math.floor((inst.vcpus - SYSTEM_VCPUS) / pod_vcpus + 1e-9)
        by_mem = math.floor(alloc_mem / pod_mem) if pod_mem > 0 else by_cpu
        mem_frac = pod_mem / alloc_mem if alloc_mem > 0 else math.inf
        if by_cpu < 1:
            mem_frac = max(mem_frac, pod_vcpus / max(inst.vcpus - SYSTEM_VCPUS, 1e-9))  # does not fit at all
        return PodFit(pod_vcpus, pod_mem, max(0, min(by_cpu, by_mem)), mem_frac, c.runtime or self.runtime)

    def _replicas(self, pod_rate: float, capacity: float) -> tuple[int, bool]:
        """(replicas, capped): the fewest pods that serve the peak within the p99 and the
        headroom; sized for capacity when no rate meets the p99 (so the miss is measurable)."""
        usable_rate = pod_rate * (1 - self.sla.headroom)
        need = math.ceil(self.sla.peak_rate / (usable_rate if usable_rate > 0 else capacity * 0.7))
        return max(1, min(need, MAX_REPLICAS)), need > MAX_REPLICAS

    def _with_band(
        self, point: LoadPoint, service: ServiceModel, fleet: BatchingPolicy, band: float, base: Any
    ) -> LoadPoint:
        """The point's p99 with every service time at the band's lower and upper edge."""
        edges = tuple(
            simulate(base / point.rate, service.scaled(f), fleet, self.seed).percentile_ms(0.99)
            for f in (1 - band, 1 + band)
        )
        return replace(point, p99_band_ms=(edges[0], edges[1]))

    def _binding(self, constraints: dict[str, float], feasible: bool, replicas: int, pod_rate: float) -> str:
        """What limits the placement: its smallest slack when feasible, its worst miss when not."""
        if not feasible:
            return max(constraints, key=lambda k: constraints[k])
        sla = self.sla
        slack = {
            "p99 at peak": -constraints["p99"],
            "accuracy": (-constraints["accuracy"] / sla.max_accuracy_drop if sla.max_accuracy_drop else 1.0),
            "memory": -constraints["memory"],
            # spare rate beyond the headroom: small when replicas (not latency) set the cost
            "throughput at peak": 1 - sla.peak_rate / (replicas * pod_rate * (1 - sla.headroom)) if pod_rate else -1.0,
        }
        return min(slack, key=lambda k: slack[k])
