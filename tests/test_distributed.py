"""executor= (issue #20): a Dask LocalCluster of worker processes, a ProcessPoolExecutor and
a ThreadPoolExecutor give the serial path's values, statuses and derivatives; the program
travels once per worker; a worker that dies mid-call costs nothing but time."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import cvxpy as cp
import numpy as np
import pytest

import dpplayers
from dpplayers import _distributed

distributed = pytest.importorskip("distributed")

B = 12
INFEASIBLE = 5  # the batch element whose bounds cannot be met
ATOL = 1e-12
CRASH_MARKER_DIR = Path(os.environ.get("TMPDIR", "/tmp"))


def program() -> dpplayers.CompiledProblem:
    """A small QP whose A depends on θ (so no solver workspace is reused) and whose lower
    bound can exceed its budget. With SCS's starting scale set (ARGS), no fresh workspace
    starts from an earlier solve's either: each element's answer is the same whoever
    solves it."""
    A, b, lo = cp.Parameter((4, 3), name="A"), cp.Parameter(4, name="b"), cp.Parameter(3, name="lo")
    x = cp.Variable(3, name="x")
    bound = x >= lo
    problem = cp.Problem(cp.Minimize(cp.sum_squares(A @ x - b) + 0.1 * cp.norm1(x)),
                         [bound, cp.sum(x) <= 1])
    return dpplayers.compile(problem, [A, b, lo], [x, bound.dual_variables[0]])


PROG = program()
RNG = np.random.default_rng(7)
VALUES = (RNG.standard_normal((B, 4, 3)), RNG.standard_normal((B, 4)),
          np.where(np.arange(B)[:, None] == INFEASIBLE, 1.0, -1.0) * np.ones((B, 3)))
COTANGENTS = (RNG.standard_normal((B, 3)), RNG.standard_normal((B, 3)))
TANGENTS = (RNG.standard_normal((B, 4, 3)), RNG.standard_normal(4), None)  # b broadcast
ARGS = {"eps": 1e-10, "scale": 0.1}  # SCS's default scale, fixed: no memory of other solves


@pytest.fixture(scope="module")
def cluster_client() -> Iterator[object]:
    """One LocalCluster of 2 worker processes for the module; its workers see the crash
    hook's variable (the hook fires only while its marker file exists)."""
    marker = str(CRASH_MARKER_DIR / f"dpplayers-crash-{os.getpid()}")
    os.environ[_distributed.CRASH_ONCE_ENV] = marker
    try:
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None)
    finally:
        del os.environ[_distributed.CRASH_ONCE_ENV]
    client = distributed.Client(cluster)
    client.crash_marker = marker
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    with ProcessPoolExecutor(max_workers=2) as ex:
        yield ex


@pytest.fixture(params=["dask", "dask-executor", "process", "thread"])
def executor(request: pytest.FixtureRequest) -> Iterator[object]:
    if request.param == "dask":
        yield request.getfixturevalue("cluster_client")
    elif request.param == "dask-executor":
        yield request.getfixturevalue("cluster_client").get_executor()
    elif request.param == "process":
        yield request.getfixturevalue("pool")
    else:
        with ThreadPoolExecutor(max_workers=2) as ex:
            yield ex


def close(a: object, b: object, atol: float = ATOL) -> None:
    """Equal to atol, NaN where NaN, through nested tuples."""
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        for u, v in zip(a, b):
            close(u, v, atol)
        return
    np.testing.assert_allclose(a, b, rtol=0, atol=atol, equal_nan=True)


@pytest.fixture(scope="module")
def serial() -> dict[str, object]:
    with pytest.warns(RuntimeWarning, match="1 of 12 batch elements failed"):
        sol = PROG.solve(*VALUES, solver_args=ARGS, on_failure="nan")
    return {"sol": sol, "vjp": sol.vjp(*COTANGENTS), "jvp": sol.jvp(*TANGENTS),
            "jacobian": sol.jacobian()}


def test_serial_reference_is_sound(serial: dict[str, object]) -> None:
    """The reference: element INFEASIBLE failed, the others solved and match CVXPY."""
    sol = serial["sol"]
    assert sol.status[INFEASIBLE] == dpplayers.Status.INFEASIBLE
    assert sol.ok.sum() == B - 1 and np.isnan(sol.values[0][INFEASIBLE]).all()
    A, b, lo = PROG.problem.parameters()
    for k in (0, B - 1):
        A.value, b.value, lo.value = VALUES[0][k], VALUES[1][k], VALUES[2][k]
        PROG.problem.solve(solver=cp.CLARABEL)
        np.testing.assert_allclose(sol.values[0][k], PROG.problem.variables()[0].value, atol=1e-6)


def test_matches_serial(executor: object, serial: dict[str, object]) -> None:
    with pytest.warns(RuntimeWarning, match=r"1 of 12 batch elements failed \(\[5\]\)"):
        sol = PROG.solve(*VALUES, solver_args=ARGS, on_failure="nan", executor=executor,
                         chunksize=5)
    ref = serial["sol"]
    close(sol.values, ref.values)
    assert sol.status == ref.status
    assert [i["status"] for i in sol.info] == [i["status"] for i in ref.info]
    close(sol.vjp(*COTANGENTS, executor=executor), serial["vjp"])
    close(sol.jvp(*TANGENTS, executor=executor, chunksize=2), serial["jvp"])
    close(sol.jacobian(executor=executor), serial["jacobian"])
    close(sol.vjp(*COTANGENTS), serial["vjp"])  # and here, J rebuilt from (x, y, s)
    assert np.isfinite(sol.residual[sol.ok]).all()


def test_derivative_in_the_same_call(executor: object, serial: dict[str, object]) -> None:
    with pytest.warns(RuntimeWarning, match="batch elements failed"):
        sol, grads = PROG.solve_and_vjp(*VALUES, cotangents=COTANGENTS, solver_args=ARGS,
                                        on_failure="nan", executor=executor)
    close(grads, serial["vjp"])
    close(sol.values, serial["sol"].values)
    assert np.isfinite(sol.residual[sol.ok]).all()  # the workers' solve statistics came back
    with pytest.warns(RuntimeWarning, match="batch elements failed"):
        _, tangents = PROG.solve_and_jvp(*VALUES, tangents=TANGENTS, solver_args=ARGS,
                                         on_failure="nan", executor=executor)
    close(tangents, serial["jvp"])


def test_failure_names_the_users_element(executor: object) -> None:
    with pytest.raises(dpplayers.SolverError, match=f"batch element {INFEASIBLE} "):
        PROG.solve(*VALUES, solver_args=ARGS, executor=executor, chunksize=2)


def test_unbatched_call(executor: object) -> None:
    one = tuple(v[0] for v in VALUES)
    ref = PROG.solve(*one, solver_args=ARGS)
    sol, g = PROG.solve_and_vjp(*one, cotangents=(np.ones(3), None), solver_args=ARGS,
                                executor=executor)
    close(sol.values, ref.values)
    close(g, ref.vjp(np.ones(3), None))
    close(sol.jacobian(executor=executor), ref.jacobian())


@pytest.mark.filterwarnings("ignore:1 of 12 batch elements failed")
def test_program_travels_once_per_worker(cluster_client: object, pool: ProcessPoolExecutor) -> None:
    key = PROG.shipped.key
    for _ in range(3):
        PROG.solve(*VALUES, solver_args=ARGS, on_failure="nan", executor=cluster_client,
                   chunksize=1)
    loads = cluster_client.run(lambda: dict(_distributed.LOADS))
    assert len(loads) == 2 and all(held == {key: 1} for held in loads.values())
    for _ in range(3):
        PROG.solve(*VALUES, solver_args=ARGS, on_failure="nan", executor=pool, chunksize=1)
    sent = _distributed.SHIPMENTS[key]
    PROG.solve(*VALUES, solver_args=ARGS, on_failure="nan", executor=pool, chunksize=1)
    PROG.solve(*VALUES, solver_args=ARGS, on_failure="nan", executor=cluster_client)
    assert _distributed.SHIPMENTS[key] == sent  # no payload once the workers hold it
    seen = {}
    for _ in range(20):  # ask the pool's processes what they hold
        pid, held = pool.submit(_loads_here).result()
        seen[pid] = held.get(key, 0)
    assert set(seen.values()) <= {1}
    assert _distributed.LOADS[key] == 0  # the caller never unpickled it (threads share it)


def _loads_here() -> tuple[int, dict[str, int]]:
    return os.getpid(), dict(_distributed.LOADS)


def test_program_reaches_workers_that_were_not_sent_it(serial: dict[str, object]) -> None:
    """More chunks than workers: chunks sent without the payload to a worker that lacks it
    are answered MISSING and sent again with it."""
    with ProcessPoolExecutor(max_workers=2) as ex:
        with pytest.warns(RuntimeWarning, match="batch elements failed"):
            sol = PROG.solve(*VALUES, solver_args=ARGS, on_failure="nan", executor=ex,
                             chunksize=1)
    close(sol.values, serial["sol"].values)


def test_dead_dask_worker_chunk_is_recomputed(cluster_client: object,
                                              serial: dict[str, object]) -> None:
    Path(cluster_client.crash_marker).touch()
    with pytest.warns(RuntimeWarning, match="batch elements failed"):
        sol, grads = PROG.solve_and_vjp(*VALUES, cotangents=COTANGENTS, solver_args=ARGS,
                                        on_failure="nan", executor=cluster_client)
    assert not Path(cluster_client.crash_marker).exists()  # a worker did die
    close(sol.values, serial["sol"].values)
    close(grads, serial["vjp"])


def test_cancelled_dask_chunks_are_resubmitted(cluster_client: object, serial: dict[str, object],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that dies can take the scattered program's key with it, and dask then
    cancels the chunks that need it ("already forgotten": a CI run failed so). The first
    chunk here is cancelled as dask would; the call resubmits it, the program scattered
    anew, and the answer is the serial one."""
    submit = type(cluster_client).submit
    cancelled: list[object] = []

    def cancel_the_first(self: object, *args: object, **kwargs: object) -> object:
        future = submit(self, *args, **kwargs)
        if not cancelled:
            future.cancel()
            cancelled.append(future)
        return future

    monkeypatch.setattr(type(cluster_client), "submit", cancel_the_first)
    with pytest.warns(RuntimeWarning, match="batch elements failed"):
        sol = PROG.solve(*VALUES, solver_args=ARGS, on_failure="nan", executor=cluster_client)
    assert cancelled and cancelled[0].cancelled()
    close(sol.values, serial["sol"].values)


def test_broken_process_pool_is_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         serial: dict[str, object]) -> None:
    marker = tmp_path / "crash"
    monkeypatch.setenv(_distributed.CRASH_ONCE_ENV, str(marker))
    marker.touch()
    with ProcessPoolExecutor(max_workers=2) as ex:  # its workers inherit the variable
        with pytest.warns(RuntimeWarning, match="batch elements failed"):
            sol = PROG.solve(*VALUES, solver_args=ARGS, on_failure="nan", executor=ex)
        assert not marker.exists()
        close(sol.values, serial["sol"].values)
        close(sol.jacobian(), serial["jacobian"])
        with pytest.raises(BrokenProcessPool):  # the caller's pool stays broken
            ex.submit(os.getpid).result()


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="executor must be a concurrent.futures.Executor"):
        PROG.solve(*VALUES, executor="cluster")
    with ThreadPoolExecutor(1) as ex, pytest.raises(ValueError, match="chunksize must be"):
        PROG.solve(*VALUES, executor=ex, chunksize=0)


def test_wrong_shapes_are_refused_before_anything_is_sent(serial: dict[str, object]) -> None:
    sol = serial["sol"]
    bad = (np.ones((B, 4)), None)
    with pytest.raises(dpplayers.DerivativeError) as here:
        sol.vjp(*bad)
    with ThreadPoolExecutor(1) as ex:
        with pytest.raises(dpplayers.DerivativeError, match=r"expects shape \(12, 3\)") as there:
            sol.vjp(*bad, executor=ex)
        assert str(there.value) == str(here.value)
        with pytest.raises(dpplayers.ParameterError, match="tangent for 'b' expects shape"):
            sol.jvp(None, np.ones(3), None, executor=ex)


def test_sensitivity_path_and_influence_take_an_executor(pool: ProcessPoolExecutor) -> None:
    n, d = 20, 3
    rng = np.random.default_rng(4)
    Xv = rng.normal(size=(n, d))
    yv = Xv @ np.array([1.5, -2.0, 0.0]) + 0.5 * rng.normal(size=n)
    w, lam = cp.Parameter(n, nonneg=True, name="w"), cp.Parameter(nonneg=True, name="lam")
    beta = cp.Variable(d, name="beta")
    problem = cp.Problem(cp.Minimize(w @ cp.square(yv - Xv @ beta) + lam * cp.norm1(beta)))
    values = {w: np.ones(n), lam: 2.0}
    here = dpplayers.influence(problem, weights=w, coefficients=beta, values=values, exact=True)
    there = dpplayers.influence(problem, weights=w, coefficients=beta, values=values,
                                exact=True, executor=pool, chunksize=4)
    close(there.exact_change, here.exact_change)
    np.testing.assert_array_equal(there.active_set_changed, here.active_set_changed)
    prog = dpplayers.compile(problem, [w, lam], [beta], solver="CLARABEL")
    grid = np.geomspace(50.0, 0.5, 8)
    local = dpplayers.sensitivity.path(prog, lam, grid, values)
    remote = dpplayers.sensitivity.path(prog, lam, grid, values, executor=pool, chunksize=3)
    # λ enters c only: a kept solver workspace may change the last digits (README)
    np.testing.assert_allclose(remote.values[0], local.values[0], atol=1e-8)
    np.testing.assert_allclose(remote.tangents[0], local.tangents[0], atol=1e-6)
    np.testing.assert_array_equal(remote.changes, local.changes)


def test_gp_and_embedding_mode_on_workers(pool: ProcessPoolExecutor) -> None:
    """The worker-side chunk Solution is an ordinary one: GP logs and mode="embedding"
    come through. The GP's A is constant (θ enters b and c through logs), so SCS keeps
    its workspace and the last digits depend on each worker's history (README)."""
    rng = np.random.default_rng(2)
    x, y = cp.Variable(pos=True, name="x"), cp.Variable(pos=True, name="y")
    a, b = cp.Parameter(pos=True, name="a"), cp.Parameter(pos=True, name="b")
    gp = dpplayers.compile(cp.Problem(cp.Minimize(a * x + b / (x * y)), [y <= 2.0 * a]),
                           [a, b], [x, y], gp=True)
    av, bv = rng.uniform(0.5, 2, 7), rng.uniform(0.5, 2, 7)
    here, there = gp.solve(av, bv), gp.solve(av, bv, executor=pool, chunksize=2)
    np.testing.assert_allclose(there.values, here.values, rtol=1e-7)
    np.testing.assert_allclose(there.jacobian(executor=pool), here.jacobian(), rtol=1e-6)
    A, c = cp.Parameter((3, 2), name="A"), cp.Parameter(3, name="c")
    z = cp.Variable(2, name="z")
    emb = dpplayers.compile(cp.Problem(cp.Minimize(cp.sum_squares(A @ z - c)), [z >= -1]),
                            [A, c], [z], mode="embedding")
    Av, cv = rng.standard_normal((5, 3, 2)), rng.standard_normal((5, 3))
    here, there = emb.solve(Av, cv), emb.solve(Av, cv, executor=pool)
    # LSQR stops at its tolerances (1e-12, relative: times J's condition in the answer), so
    # the two solves' last digits move its answer by more than rounding (seen: 1.6e-12)
    close(there.vjp(np.ones((5, 2)), executor=pool), here.vjp(np.ones((5, 2))), atol=1e-9)
    assert not there.fell_back.any()
