"""The deployed server's own cost on top of the profiled service times.

One place for the planner (``plan/evaluate.py``) and ``loadtest --predict-from`` /
``verify`` (``serve/prediction.py``), so the plan's p99 and the one verify checks it
against simulate the same serving path from the same ``profile --serving`` terms.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from optiserve.estimate.service import ServiceModel
from optiserve.estimate.simulator import BatchingPolicy

if TYPE_CHECKING:
    from optiserve.profile.serving import ServingTerms


def served_path(
    service: ServiceModel,
    terms: ServingTerms | None,
    max_batch: int,
    max_delay_s: float,
    instances: int,
    shared_core: bool = False,
) -> tuple[ServiceModel, BatchingPolicy]:
    """(service, policy) of one pod: the call's open-loop extra once per batch, each call then
    spread as the served calls were, the per-row cost,
    the front end per row on a core shared with inference (else a station of its own, whose work
    landing during a call stretches it where it holds the GIL), and the fixed term drawn from its
    measured spread where there is one (else its mean)."""
    if terms is None:
        return service, BatchingPolicy(max_batch, max_delay_s, (), instances)
    # the front end's cost as the load brings it (measured open loop): the cheapest in the model, the rest
    # on the curve the simulator reads at each replica's rate
    curve = terms.shared_curve if shared_core else terms.frontend_curve
    floor = min(c for _, c in curve) if curve else terms.frontend_s
    extra = tuple((r, c - floor) for r, c in curve)
    per_row = terms.per_row_s + (floor if shared_core else 0.0)
    served = service.plus_per_call(terms.per_call_s) if terms.per_call_s else service
    served = served.jittered(terms.call_factors) if terms.call_factors else served
    served = served.plus_per_item(per_row) if per_row else served
    spread = terms.fixed_quantiles_s
    front, fixed = (0.0 if shared_core else floor), (0.0 if spread else terms.fixed_s)
    slows = not shared_core and terms.front_end_slows_inference()
    return served, BatchingPolicy(
        max_batch,
        max_delay_s,
        (),
        instances,
        1,
        front,
        fixed,
        spread,
        slows,
        extra,
        frontend_per_row=shared_core,
        fixed_spread_curve=terms.fixed_curve,
    )
