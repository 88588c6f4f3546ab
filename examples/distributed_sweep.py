"""A scenario sweep on a Dask cluster: optimal portfolios under many return scenarios, and
how each portfolio's expected return moves with the scenario's forecast.

One compiled program, a batch of scenarios (the forecast μ and the risk aversion γ vary),
solved in chunks on the cluster's workers with the derivative taken on each worker right
after its solve (``solve_and_vjp``): the program travels to each worker once, only the
scenario values, the cotangents and the answers cross the network.

Pointing it at a real cluster changes one line: set ``SCHEDULER`` to the scheduler's
address ("tcp://scheduler-host:8786"); every worker needs dpplayers installed. Here it
starts a LocalCluster of two worker processes. ``QUICK=1`` runs a small sweep.

    python examples/distributed_sweep.py
"""

from __future__ import annotations

import os
import time

import cvxpy as cp
import numpy as np
from distributed import Client, LocalCluster

import dpplayers

SCHEDULER: str | None = None  # e.g. "tcp://scheduler-host:8786": the only change
QUICK = os.environ.get("QUICK") == "1"
ASSETS, SCENARIOS = (8, 32) if QUICK else (40, 2000)


def portfolio() -> tuple[dpplayers.CompiledProblem, np.ndarray]:
    """max μᵀw − γ wᵀΣw  s.t.  1ᵀw = 1, 0 ≤ w ≤ 0.25 (Σ fixed, μ and γ per scenario)."""
    rng = np.random.default_rng(0)
    F = rng.standard_normal((ASSETS, 3)) * 0.1
    sigma = F @ F.T + np.diag(rng.uniform(0.01, 0.04, ASSETS))
    mu, gamma = cp.Parameter(ASSETS, name="mu"), cp.Parameter(nonneg=True, name="gamma")
    w = cp.Variable(ASSETS, name="w")
    risk = cp.quad_form(w, sigma)
    problem = cp.Problem(cp.Maximize(mu @ w - gamma * risk),
                         [cp.sum(w) == 1, w >= 0, w <= 0.25])
    return dpplayers.compile(problem, [mu, gamma], [w]), rng.standard_normal((SCENARIOS, 1))


def main() -> None:
    prog, shock = portfolio()
    rng = np.random.default_rng(1)
    base = rng.uniform(0.02, 0.12, ASSETS)
    mus = base + 0.03 * shock + 0.02 * rng.standard_normal((SCENARIOS, ASSETS))
    gammas = rng.uniform(0.5, 5.0, SCENARIOS)
    # d(expected return under the base forecast)/d(scenario inputs): cotangent base on w
    cotangents = [np.broadcast_to(base, (SCENARIOS, ASSETS))]

    if SCHEDULER:
        client = Client(SCHEDULER)
    else:
        client = Client(LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                     dashboard_address=None))
    with client:
        start = time.perf_counter()
        sol, (d_mu, d_gamma) = prog.solve_and_vjp(mus, gammas, cotangents=cotangents,
                                                  executor=client, on_failure="nan")
        seconds = time.perf_counter() - start
        weights = sol.values[0]
        print(f"{SCENARIOS} scenarios × {ASSETS} assets on {len(client.nthreads())} workers: "
              f"{seconds:.2f} s, {sol.ok.sum()} solved")
        print(f"expected return under the base forecast: mean {np.mean(weights @ base):.4f}, "
              f"worst {np.min(weights @ base):.4f}")
        print(f"mean d(return)/d(gamma): {np.mean(d_gamma):+.4f} (more risk aversion costs return)")

        # the same on this machine alone, and one scenario by CVXPY: same answers
        check = slice(0, min(SCENARIOS, 16))
        local = prog.solve(mus[check], gammas[check])
        assert np.allclose(weights[check], local.values[0], atol=1e-6)
        assert np.allclose(d_mu[check], local.vjp(cotangents[0][check])[0], atol=1e-6)
        mu, gamma = prog.problem.parameters()
        mu.value, gamma.value = mus[0], gammas[0]
        prog.problem.solve()
        assert np.allclose(weights[0], prog.problem.variables()[0].value, atol=1e-4)
        print("checked against the local solve and CVXPY")


if __name__ == "__main__":
    main()
