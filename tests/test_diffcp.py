"""With P = 0, the data-level adjoint equals diffcp's adjoint_derivative (to 1e-6)."""

import numpy as np
import pytest
from helpers import CASES

import dpplayers
from dpplayers._derivative.kkt import data_adjoint, kkt_operator
from dpplayers._derivative.linear_solvers import Direct

diffcp = pytest.importorskip("diffcp")

#: Cases whose cone program has no P (diffcp has no power cone: power cases are excluded).
LINEAR_OBJECTIVE = ["lp_box", "lp_equality_form", "socp_ball_linear", "sdp_lambda_max",
                    "exp_softmax", "exp_kl_div", "dual_exp_cone"]


def cone_dict(k):
    return {"z": k.zero, "l": k.nonneg, "q": list(k.soc), "s": list(k.psd), "ep": k.exp}


@pytest.mark.parametrize("name", LINEAR_OBJECTIVE)
def test_adjoint_matches_diffcp(name):
    case = CASES[name]()
    prog = dpplayers.compile(case.problem, case.parameters, case.variables, solver="SCS",
                             quad_obj=False)
    assert prog.P is None and not prog.cones.power
    values = case.sample(np.random.default_rng(0))
    sol = prog.solve(*values, solver_args={"eps": 1e-11, "max_iters": 500_000})
    _, A, b, c = prog.element_data(sol._data, 0)
    x, y, s, _, DT = diffcp.solve_and_derivative(A, b, c, cone_dict(prog.cones), mode="dense",
                                                 eps=1e-11, max_iters=500_000)
    rng = np.random.default_rng(1)
    dx, dy, ds = rng.standard_normal(prog.n), rng.standard_normal(prog.m), rng.standard_normal(prog.m)
    dA_ref, db_ref, dc_ref = DT(dx, dy, ds)

    op = kkt_operator(None, A, y, s, prog.cones)
    D = op.D
    rhs = np.concatenate([dx, D.mv(dy) + D.mv(ds) - ds])[:, None]
    solver = Direct()
    r = -solver.compute(solver.init(op), rhs, transpose=True)[0]
    _, gA, gb, gc = data_adjoint(x, y, r, np.zeros(0, int), np.zeros(0, int), prog.A.rows,
                                 prog.A.cols, has_P=False)
    ref_A = np.asarray(dA_ref.toarray())[prog.A.rows, prog.A.cols]
    scale = max(1.0, np.abs(dc_ref).max(), np.abs(db_ref).max())
    np.testing.assert_allclose(gc[:, 0], dc_ref, atol=1e-6 * scale)
    np.testing.assert_allclose(gb[:, 0], db_ref, atol=1e-6 * scale)
    np.testing.assert_allclose(gA[:, 0], ref_A, atol=1e-6 * scale)
