"""Decide: the Optuna cost-placement search over a hardware catalog, judged by the simulator."""
