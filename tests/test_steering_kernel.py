"""The per-customer DP against brute force; the Lagrangian plan against the exact MILP."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from centile.kernels.contact_plan import concave_hulls, plans_at, value_curves
from centile.steering.solve import solve_plan
from tests.reference_steering import brute_curve, feasible, milp_optimum


@st.composite
def tiny(draw):
    n = draw(st.integers(1, 3))
    M = draw(st.integers(1, 3))
    T = draw(st.integers(1, 5))
    vals = draw(st.lists(st.sampled_from([-1.0, 0.0, 0.5, 1.0, 1.0, 2.5, 3.0, np.nan]),
                         min_size=n * M * T, max_size=n * M * T))
    v = np.array(vals).reshape(n, M, T)
    costs = np.array(draw(st.lists(st.integers(1, 4), min_size=M, max_size=M)))
    budgets = np.array(draw(st.lists(st.integers(0, 12), min_size=n, max_size=n)))
    since = np.array(draw(st.lists(st.integers(1, 4), min_size=n, max_size=n)))
    cap = draw(st.integers(0, 3))
    gap = draw(st.integers(0, 2))
    return v, costs, budgets, since, cap, gap


@given(tiny())
def test_dp_equals_brute_force_for_every_budget(case):
    v, costs, budgets, since, cap, gap = case
    off, curves = value_curves(v, costs, budgets, since, cap=cap, gap=gap)
    for i in range(v.shape[0]):
        got = curves[off[i]:off[i + 1]]
        want = brute_curve(v[i], costs, int(budgets[i]), cap, gap, int(since[i]))
        np.testing.assert_allclose(got, want, atol=1e-12)
        assert np.all(np.diff(got) >= 0)  # V_i(b) non-decreasing


@given(tiny())
def test_plans_respect_gap_cap_budget_eligibility_and_reach_the_curve(case):
    v, costs, budgets, since, cap, gap = case
    off, curves = value_curves(v, costs, budgets, since, cap=cap, gap=gap)
    med = plans_at(v, costs, budgets, since, cap=cap, gap=gap)
    for i in range(v.shape[0]):
        plan = med[i].tolist()
        assert feasible(plan, costs, cap, gap, int(since[i]), int(budgets[i]))
        assert all(v[i, m, t] > 0 for t, m in enumerate(plan) if m >= 0)
        val = sum(v[i, m, t] for t, m in enumerate(plan) if m >= 0)
        assert val == pytest.approx(curves[off[i + 1] - 1])


@given(tiny())
def test_hull_vertices_lie_on_the_curve_and_are_concave(case):
    v, costs, budgets, since, cap, gap = case
    off, curves = value_curves(v, costs, budgets, since, cap=cap, gap=gap)
    hoff, hb, hv = concave_hulls(v, costs, budgets, since, cap=cap, gap=gap)
    for i in range(v.shape[0]):
        b, y = hb[hoff[i]:hoff[i + 1]], hv[hoff[i]:hoff[i + 1]]
        curve = curves[off[i]:off[i + 1]]
        assert b[0] == 0 and y[0] == 0
        np.testing.assert_allclose(y, curve[b])
        assert y[-1] == curve.max()
        slopes = np.diff(y) / np.diff(b)
        assert np.all(np.diff(slopes) < 0) and np.all(slopes > 0)
        for bb in range(curve.size):  # every curve point under the hull
            assert curve[bb] <= np.interp(bb, b, y) + 1e-9


def test_negative_values_are_never_contacted():
    v = -np.ones((4, 2, 6))
    med = plans_at(v, np.array([1, 2]), np.full(4, 10), np.full(4, 9), cap=3, gap=0)
    assert (med == -1).all()


def _instance(seed, n, M=2, T=4, with_capacity=False):
    rng = np.random.default_rng(seed)
    v = np.round(rng.gamma(2.0, 1.0, (n, M, T)) - 0.8, 3)
    v[rng.random(v.shape) < 0.1] = np.nan
    costs = rng.integers(1, 4, M)
    budgets = rng.integers(0, 9, n)
    since = rng.integers(1, 4, n)
    # a binding global budget: half the spend of the unconstrained plan
    bg = solve_plan(v, costs, budgets, since, cap=2, gap=1).spend // 2
    used0 = int((solve_plan(v, costs, budgets, since, cap=2, gap=1, global_budget=bg).medium == 0).sum())
    capacity = np.array([used0 // 2] + [-1] * (M - 1)) if with_capacity else None  # binding too
    return v, costs, budgets, since, bg, capacity


@pytest.mark.parametrize("seed", range(4))
def test_global_budget_against_milp(seed):
    v, costs, budgets, since, bg, _ = _instance(seed, 200)
    sol = solve_plan(v, costs, budgets, since, cap=2, gap=1, global_budget=bg)
    opt = milp_optimum(v, costs, budgets, since, 2, 1, global_budget=bg)
    assert sol.bound >= opt - 1e-7 >= sol.value - 2e-7
    assert sol.spend <= bg
    assert sol.gap <= 1e-3
    print(f"seed {seed}: gap {sol.gap:.2e}, (UB-OPT)/UB {(sol.bound - opt) / sol.bound:.2e}")


@pytest.mark.parametrize("seed", range(3))
def test_capacities_against_milp(seed):
    v, costs, budgets, since, bg, capacity = _instance(10 + seed, 200, with_capacity=True)
    sol = solve_plan(v, costs, budgets, since, cap=2, gap=1, global_budget=bg, capacity=capacity)
    opt = milp_optimum(v, costs, budgets, since, 2, 1, global_budget=bg, capacity=capacity)
    assert sol.bound >= opt - 1e-7 >= sol.value - 2e-7
    assert sol.spend <= bg and (sol.medium == 0).sum() <= capacity[0]
    assert sol.mu[0] > 0  # the capacity binds
    assert sol.gap <= 0.01
    print(f"capacity seed {seed}: gap {sol.gap:.2e}, (UB-OPT)/UB {(sol.bound - opt) / sol.bound:.2e}")


def test_plan_value_non_decreasing_in_the_global_budget():
    v, costs, budgets, since, bg, _ = _instance(7, 60)
    prev = -1.0
    for b in range(0, 2 * bg, max(1, bg // 12)):
        sol = solve_plan(v, costs, budgets, since, cap=2, gap=1, global_budget=b)
        assert sol.spend <= b
        assert sol.value >= prev - 1e-9
        prev = sol.value


def test_permutation_and_threads_give_identical_plans():
    from centile.runtime import numba_threads

    v, costs, budgets, since, bg, cap = _instance(3, 300, with_capacity=True)
    a = solve_plan(v, costs, budgets, since, cap=2, gap=1, global_budget=bg, capacity=cap)
    with numba_threads(1):
        b = solve_plan(v, costs, budgets, since, cap=2, gap=1, global_budget=bg, capacity=cap)
    assert np.array_equal(a.medium, b.medium) and a.value == b.value and a.bound == b.bound


@pytest.mark.parametrize("x", [0.07312652, 0.1 + 0.2, 1 / 3, 2.718281828, 0.0017477])
def test_collinear_hull_points_are_merged_despite_rounding(x):
    # regression (found by the benchmark): equal per-contact gains give collinear points
    # whose float slopes differed in the last bit; the greedy then met a customer's later
    # segment first, skipped it for good and lost up to 8 currency units per customer
    v = np.full((1, 1, 6), x)
    hoff, hb, hv = concave_hulls(v, np.array([44]), np.array([10_000]), np.array([9]), cap=4, gap=0)
    assert hb.tolist() == [0, 176]
    assert hv[-1] == pytest.approx(4 * x)


def test_greedy_reaches_the_lagrangian_bound_on_equal_gain_customers():
    rng = np.random.default_rng(0)
    v = np.repeat(rng.uniform(0.05, 1.0, (500, 1, 1)), 8, axis=2) + np.zeros((500, 2, 8))
    v[:, 1] = np.nan
    costs = np.array([44, 7])
    sol = solve_plan(v, costs, np.full(500, 10_000), np.full(500, 9), cap=4, gap=1,
                     global_budget=500 * 44 * 2 + 13)
    assert sol.gap < 1e-3


def test_hulls_per_partition_merge_to_the_hulls_of_the_whole():
    v, costs, budgets, since, _, _ = _instance(5, 300)
    whole = concave_hulls(v, costs, budgets, since, cap=2, gap=1)
    parts = [concave_hulls(v[a:b], costs, budgets[a:b], since[a:b], cap=2, gap=1) for a, b in
             ((0, 97), (97, 98), (98, 300))]
    off = np.concatenate([[0], np.cumsum(np.concatenate([np.diff(p[0]) for p in parts]))])
    assert np.array_equal(off, whole[0])
    assert np.array_equal(np.concatenate([p[1] for p in parts]), whole[1])
    assert np.array_equal(np.concatenate([p[2] for p in parts]), whole[2])


# ---------------------------------------------------------------- frequency cap per medium

@st.composite
def tiny_capped(draw):
    v, costs, budgets, since, cap, gap = draw(tiny())
    M = v.shape[1]
    mcap = np.array(draw(st.lists(st.integers(-1, 3), min_size=M, max_size=M)))
    return v, costs, budgets, since, cap, gap, mcap


@given(tiny_capped())
def test_dp_with_medium_caps_equals_brute_force_for_every_budget(case):
    v, costs, budgets, since, cap, gap, mcap = case
    off, curves = value_curves(v, costs, budgets, since, cap=cap, gap=gap, medium_cap=mcap)
    med = plans_at(v, costs, budgets, since, cap=cap, gap=gap, medium_cap=mcap)
    for i in range(v.shape[0]):
        got = curves[off[i]:off[i + 1]]
        want = brute_curve(v[i], costs, int(budgets[i]), cap, gap, int(since[i]), medium_cap=mcap)
        np.testing.assert_allclose(got, want, atol=1e-12)
        assert np.all(np.diff(got) >= 0)
        plan = med[i].tolist()
        assert feasible(plan, costs, cap, gap, int(since[i]), int(budgets[i]), medium_cap=mcap)
        assert sum(v[i, m, t] for t, m in enumerate(plan) if m >= 0) == pytest.approx(got[-1])


def test_a_medium_cap_of_one_allows_one_contact_of_that_medium():
    v = np.zeros((1, 2, 6))
    v[0, 0] = 5.0  # the best medium in every period
    v[0, 1] = 1.0
    med = plans_at(v, np.array([1, 1]), np.array([100]), np.array([9]), cap=4, gap=0,
                   medium_cap=np.array([1, -1]))
    assert (med[0] == 0).sum() == 1 and (med[0] >= 0).sum() == 4


def test_too_many_medium_cap_states_are_refused():
    v = np.ones((1, 6, 3))
    with pytest.raises(ValueError, match="DP states"):
        value_curves(v, np.ones(6, np.int64), np.array([9]), np.array([9]), cap=52, gap=0,
                     medium_cap=np.full(6, 10))


@pytest.mark.parametrize("seed", range(2))
def test_medium_caps_against_milp(seed):
    v, costs, budgets, since, bg, _ = _instance(20 + seed, 150, T=6)
    mcap = np.array([1, -1])
    sol = solve_plan(v, costs, budgets, since, cap=3, gap=0, global_budget=bg, medium_cap=mcap)
    opt = milp_optimum(v, costs, budgets, since, 3, 0, global_budget=bg, medium_cap=mcap)
    assert ((sol.medium == 0).sum(axis=1) <= 1).all()
    assert sol.bound >= opt - 1e-7 >= sol.value - 2e-7
    assert sol.gap <= 1e-3


# ---------------------------------------------------------------- capacity per period

@pytest.mark.parametrize("seed", range(3))
def test_capacity_per_period_against_milp(seed):
    v, costs, budgets, since, bg, _ = _instance(30 + seed, 200)
    free = solve_plan(v, costs, budgets, since, cap=2, gap=1, global_budget=bg)
    per_t = (free.medium == 0).sum(axis=0)
    pcap = np.array([int(per_t.max()) * 2 // 3, -1])  # binds in the busiest periods
    sol = solve_plan(v, costs, budgets, since, cap=2, gap=1, global_budget=bg, period_capacity=pcap)
    opt = milp_optimum(v, costs, budgets, since, 2, 1, global_budget=bg, period_capacity=pcap)
    assert ((sol.medium == 0).sum(axis=0) <= pcap[0]).all()
    assert sol.spend <= bg
    assert sol.bound >= opt - 1e-7 >= sol.value - 2e-7
    assert sol.nu is not None and sol.nu[0].max() > 0
    assert sol.gap <= 0.01
    print(f"period capacity seed {seed}: gap {sol.gap:.2e}, (UB-OPT)/UB {(sol.bound - opt) / sol.bound:.2e}")


def test_all_limits_together_against_milp():
    v, costs, budgets, since, bg, capacity = _instance(40, 150, with_capacity=True)
    mcap = np.array([1, -1])
    pcap = np.array([-1, 25])
    sol = solve_plan(v, costs, budgets, since, cap=2, gap=1, global_budget=bg, capacity=capacity,
                     medium_cap=mcap, period_capacity=pcap)
    opt = milp_optimum(v, costs, budgets, since, 2, 1, global_budget=bg, capacity=capacity, medium_cap=mcap,
                       period_capacity=pcap)
    med = sol.medium
    assert ((med == 0).sum(axis=1) <= 1).all() and (med == 0).sum() <= capacity[0]
    assert ((med == 1).sum(axis=0) <= 25).all() and sol.spend <= bg
    assert sol.bound >= opt - 1e-7 >= sol.value - 2e-7
    assert sol.gap <= 0.02


# ---------------------------------------------------------------- values per block of customers

def test_factored_values_per_block_give_the_dense_plan(monkeypatch):
    import centile.steering.values as values_mod
    from centile.steering.values import Factored

    rng = np.random.default_rng(9)
    n, M, T = 300, 3, 6
    scale = rng.gamma(2.0, 1.5, (n, M))
    scale[rng.random((n, M)) < 0.1] = np.nan  # not eligible
    f = Factored(scale, rng.uniform(0.7, 1.3, T), np.array([1.2, 0.35, 0.8]))
    dense = f.block(0, n)
    assert np.array_equal(dense, scale[:, :, None] * f.season[None, None, :] - f.cost[None, :, None],
                          equal_nan=True)
    costs = np.array([120, 35, 80])
    budgets = rng.integers(0, 400, n)
    since = rng.integers(1, 4, n)
    kw = dict(cap=3, gap=1, global_budget=int(budgets.sum() // 4), capacity=np.array([60, -1, -1]),
              medium_cap=np.array([-1, 1, -1]), period_capacity=np.array([-1, -1, 25]))
    a = solve_plan(dense, costs, budgets, since, **kw)
    monkeypatch.setattr(values_mod, "BLOCK", 64)  # 5 blocks, the last one short
    b = solve_plan(f, costs, budgets, since, **kw)
    assert np.array_equal(a.medium, b.medium) and a.value == b.value and a.bound == b.bound
    assert a.gap <= 0.02


def test_threads_give_identical_plans_with_medium_caps_and_capacity_per_period():
    from centile.runtime import numba_threads

    v, costs, budgets, since, bg, cap = _instance(3, 300, with_capacity=True)
    kw = dict(cap=2, gap=1, global_budget=bg, capacity=cap, medium_cap=np.array([1, -1]),
              period_capacity=np.array([-1, 30]))
    a = solve_plan(v, costs, budgets, since, **kw)
    with numba_threads(1):
        b = solve_plan(v, costs, budgets, since, **kw)
    assert np.array_equal(a.medium, b.medium) and a.value == b.value and a.bound == b.bound
    assert np.array_equal(a.nu, b.nu)
