"""Attribution models: kernels against references, hand-computed paths, Markov exactness, Shapley,
segments, path tables and bad input."""

from __future__ import annotations

import numpy as np
import polars as pl
import polars.testing
import pytest
from hypothesis import given
from hypothesis import strategies as stg

from centile.attribution import models as md
from centile.attribution.compute import AttributionSettings, attribute, parse_settings
from centile.attribution.journeys import Journeys, journeys_from_touches, read_path_table
from centile.errors import ConfigError, InputError
from centile.kernels import paths as kp
from centile.runtime import numba_threads
from tests import reference_attribution as ref


def make(paths, conv, null=None, value=None, ages=None, names=None, customers=None):
    """Journeys from lists of channel ids."""
    n = len(paths)
    c = max(max(p) for p in paths) + 1
    names = names or tuple(f"c{i}" for i in range(c))
    offsets = np.zeros(n + 1, np.int64)
    offsets[1:] = np.cumsum([len(p) for p in paths])
    ages = ages or [[float(len(p) - 1 - i) for i in range(len(p))] for p in paths]
    return Journeys(tuple(names), offsets, np.array([x for p in paths for x in p], np.int32),
                    np.array([x for a in ages for x in a], float), np.asarray(conv, float),
                    np.asarray(null if null is not None else [0.0] * n, float),
                    np.asarray(value if value is not None else conv, float),
                    pl.Series("customer_id", customers if customers is not None else list(range(n))))


journeys_st = stg.lists(
    stg.tuples(stg.lists(stg.integers(0, 3), min_size=1, max_size=6), stg.integers(0, 3), stg.integers(0, 2),
               stg.floats(0, 100)), min_size=1, max_size=12)


# --- rule-based ---------------------------------------------------------------------------------

def test_rule_based_on_hand_computed_paths():
    # A > B > A > C converting with value 10 (ages 3, 2, 1, 0 days); C alone converting; B > A null
    j = make([[0, 1, 0, 2], [2], [1, 0]], conv=[1, 1, 0], null=[0, 0, 1], value=[10, 4, 0],
             ages=[[3, 2, 1, 0], [0], [1, 0]], names=("A", "B", "C"))
    df = md.rule_based(j, 1.0)
    got = {(r["model"], r["channel"]): r["conversions"] for r in df.iter_rows(named=True)}
    assert got[("first_touch", "A")] == 1 and got[("first_touch", "C")] == 1 and got[("first_touch", "B")] == 0
    assert got[("last_touch", "C")] == 2
    # linear: repeats count -> A gets 2/4, B 1/4, C 1/4 + 1
    assert got[("linear", "A")] == pytest.approx(0.5)
    assert got[("linear", "C")] == pytest.approx(1.25)
    # position based: 0.4 A, 0.1 B, 0.1 A, 0.4 C
    assert got[("position_based", "A")] == pytest.approx(0.5)
    assert got[("position_based", "B")] == pytest.approx(0.1)
    assert got[("position_based", "C")] == pytest.approx(1.4)
    # time decay, half-life 1 day: weights 1/8, 1/4, 1/2, 1 -> total 15/8
    assert got[("time_decay", "A")] == pytest.approx((1 / 8 + 1 / 2) / (15 / 8))
    assert got[("time_decay", "C")] == pytest.approx(1 / (15 / 8) + 1)
    # simplified Shapley: distinct channels A, B, C share 1/3 each
    assert got[("shapley_simplified", "A")] == pytest.approx(1 / 3)
    assert got[("shapley_simplified", "C")] == pytest.approx(4 / 3)
    val = {(r["model"], r["channel"]): r["value"] for r in df.iter_rows(named=True)}
    assert val[("linear", "A")] == pytest.approx(5.0) and val[("last_touch", "C")] == pytest.approx(14.0)
    # two touches: 0.5 / 0.5
    two = md.rule_based(make([[0, 1]], conv=[2]), 7.0).filter(pl.col("model") == "position_based")
    assert two["conversions"].to_list() == [1.0, 1.0]


@given(journeys_st, stg.floats(0.5, 30))
def test_heuristic_kernel_matches_reference(rows, half_life):
    paths = [r[0] for r in rows]
    conv = [float(r[1]) for r in rows]
    value = [r[3] * r[1] for r in rows]
    ages = [[float(2 * (len(p) - i)) for i in range(len(p))] for p in paths]
    j = make(paths, conv, value=value, ages=ages)
    c = len(j.channels)
    cc, cv = kp.heuristic_credits(j.offsets, j.channel, j.age_days, j.conv, j.value, c, half_life)
    want = ref.heuristics(paths, ages, conv, value, c, half_life)
    for m, name in enumerate(kp.HEURISTICS):
        np.testing.assert_allclose(cc[m], want[name][0], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(cv[m], want[name][1], rtol=1e-9, atol=1e-9)
        # credits sum to the conversions and value of every journey
        assert cc[m].sum() == pytest.approx(sum(conv), abs=1e-9)
        assert cv[m].sum() == pytest.approx(sum(value), abs=1e-6)


def test_heuristics_single_and_empty_cases():
    j = make([[0]], conv=[0])
    cc, _ = kp.heuristic_credits(j.offsets, j.channel, j.age_days, j.conv, j.value, 1)
    assert (cc == 0).all()
    with pytest.raises(ValueError, match="finite"):
        kp.heuristic_credits(j.offsets, j.channel, [np.nan], j.conv, j.value, 1)
    with pytest.raises(ValueError, match="at least one touch"):
        kp.heuristic_credits(np.array([0, 0]), np.zeros(0, np.int32), np.zeros(0), [1.0], [1.0], 1)


# --- Shapley -------------------------------------------------------------------------------------

@given(journeys_st)
def test_simplified_shapley_is_the_shapley_value_of_its_additive_game(rows):
    paths = [r[0] for r in rows]
    conv = [float(r[1]) for r in rows]
    j = make(paths, conv)
    players = list(range(len(j.channels)))
    want = ref.shapley_brute(ref.additive_game(paths, conv), players)
    got = md.rule_based(j, 7.0).filter(pl.col("model") == "shapley_simplified")["conversions"].to_numpy()
    np.testing.assert_allclose(got, want, atol=1e-9)


@given(journeys_st)
def test_full_shapley_matches_brute_force_and_is_efficient(rows):
    paths = [r[0] for r in rows]
    conv = [float(r[1]) for r in rows]
    null = [float(r[2]) for r in rows]
    j = make(paths, conv, null=null)
    c = len(j.channels)
    masks = kp.channel_masks(j.offsets, j.channel, c)
    pc, _ = kp.shapley_values(masks, j.conv, j.conv + j.null, j.value, c)
    game = ref.rate_game(paths, conv, null)
    want = ref.shapley_brute(game, list(range(c)))
    np.testing.assert_allclose(pc, want, atol=1e-9)
    assert pc.sum() == pytest.approx(game(frozenset(range(c))), abs=1e-9)  # efficiency


def test_shapley_symmetric_channels_get_equal_value():
    # A and B appear in mirrored journeys
    j = make([[0, 2], [1, 2], [0], [1], [2]], conv=[3, 3, 1, 1, 2], null=[1, 1, 2, 2, 1])
    full = md.shapley(j)["conversions"].to_numpy()
    simple = md.rule_based(j, 7.0).filter(pl.col("model") == "shapley_simplified")["conversions"].to_numpy()
    assert full[0] == pytest.approx(full[1]) and simple[0] == pytest.approx(simple[1])
    assert full.sum() == pytest.approx(10.0)  # scaled to the total conversions


def test_full_shapley_refuses_more_than_20_channels():
    j = make([list(range(21))], conv=[1])
    with pytest.raises(ConfigError, match="limited to 20 channels"):
        md.shapley(j)
    res = attribute(j, AttributionSettings(), None)  # shapley not set: left out with a note
    assert "shapley" not in res.attribution["model"].to_list()
    assert any("limited to 20 channels" in n for n in res.notes)


# --- Markov --------------------------------------------------------------------------------------

@given(journeys_st, stg.sampled_from([1, 2, 3]))
def test_markov_removal_effects_equal_value_iteration(rows, order):
    paths = [r[0] for r in rows]
    conv = [float(r[1]) for r in rows]
    null = [float(r[2]) for r in rows]
    if sum(conv) == 0:
        conv[0] = 1.0
    j = make(paths, conv, null=null)
    res = md.markov(j, order)
    p0 = ref.markov_p_conversion(paths, conv, null, order=order)
    assert res.p_conversion == pytest.approx(p0, abs=1e-9)
    for ch in range(len(j.channels)):
        pr = ref.markov_p_conversion(paths, conv, null, removed={ch}, order=order)
        assert res.removal["p_conversion_removed"][ch] == pytest.approx(pr, abs=1e-9)
        assert res.removal["removal_effect"][ch] == pytest.approx(1 - pr / p0, abs=1e-9)
    att = md.markov_rows(res, j)
    assert att["conversions"].sum() == pytest.approx(sum(conv))


def test_markov_large_state_spaces_solve_to_machine_precision(monkeypatch):
    rng = np.random.default_rng(5)
    paths = [list(rng.integers(0, 5, rng.integers(1, 8))) for _ in range(400)]
    conv = rng.integers(0, 2, 400).astype(float)
    j = make(paths, conv, null=1 - conv, value=conv * rng.uniform(1, 9, 400))
    dense = md.markov(j, 3)
    monkeypatch.setattr(md, "_DENSE_MAX", 0)  # the fixed-point iteration
    it = md.markov(j, 3)
    monkeypatch.setattr(md, "_MAX_ITER", 0)  # the sparse LU fallback
    lu = md.markov(j, 3)
    monkeypatch.setattr(kp, "MAX_DENSE_CELLS", 0)  # transitions as an edge list, not dense tables
    edges = md.markov(j, 3)
    assert edges.transitions.equals(lu.transitions)
    for other in (it, lu, edges):
        assert other.p_conversion == pytest.approx(dense.p_conversion, abs=1e-13)
        np.testing.assert_allclose(other.removal["removal_effect"], dense.removal["removal_effect"], atol=1e-12)
        np.testing.assert_allclose(other.removal["removal_effect_value"], dense.removal["removal_effect_value"],
                                   atol=1e-12)


def test_markov_exact_equals_a_long_seeded_simulation():
    paths = [[0, 1], [1, 2], [0, 2, 1], [2], [0, 1, 0], [1]]
    conv, null = [5, 3, 2, 1, 0, 0], [1, 2, 1, 4, 3, 2]
    j = make(paths, conv, null=null)
    res = md.markov(j, 1)
    rng = np.random.default_rng(7)
    p, se = ref.simulate_p_conversion(paths, conv, null, set(), rng, 20_000)
    assert abs(res.p_conversion - p) < 4 * se
    p1, se1 = ref.simulate_p_conversion(paths, conv, null, {1}, rng, 20_000)
    assert abs(res.removal["p_conversion_removed"][1] - p1) < 4 * se1


def test_markov_hand_computed_chain_and_states():
    # start -> A always; A -> conversion 1/3, A -> B 2/3; B -> conversion 1/2, null 1/2
    j = make([[0], [0, 1], [0, 1]], conv=[1, 1, 0], null=[0, 0, 1], names=("A", "B"))
    res = md.markov(j, 1)
    assert res.p_conversion == pytest.approx(1 / 3 + 2 / 3 * 1 / 2)
    re = dict(zip(res.removal["channel"], res.removal["removal_effect"], strict=True))
    assert re["A"] == pytest.approx(1.0) and re["B"] == pytest.approx(1 - (1 / 3) / (2 / 3))
    tr = {(a, b): p for a, b, p in res.transitions.select("from_state", "to_state", "probability").iter_rows()}
    assert tr[("(start)", "A")] == 1.0 and tr[("A", "B")] == pytest.approx(2 / 3)
    two = md.markov(make([[0, 1, 0, 1]], conv=[1], names=("A", "B")), 2)
    states = set(two.transitions["from_state"])
    assert states == {"(start)", "A", "A > B", "B > A"}


def test_channel_absent_from_converting_paths_gets_zero():
    j = make([[0, 1], [2], [0]], conv=[1, 0, 1], null=[0, 3, 1])
    res = md.markov(j, 1)
    assert res.removal["removal_effect"][2] == 0.0
    assert md.markov_rows(res, j)["conversions"][2] == 0.0
    assert md.shapley(j)["conversions"][2] <= 0.0  # only lowers the conversion rate of its coalitions


# --- journeys, path tables, segments, threads -----------------------------------------------------

def touch_rows():
    return pl.DataFrame({
        "customer_id": [1, 1, 1, 1, 2, 2, 3],
        "journey": [1, 1, 1, 2, 1, 1, 0],
        "converted": [True, True, True, True, True, True, False],
        "age_days": [5.0, 3.0, 1.0, 0.5, 2.0, 1.0, 4.0],
        "channel": ["search", "search", "email", "direct", "email", "search", "display"],
        "value": [10.0, 10.0, 10.0, 7.0, 3.0, 3.0, 0.0],
    })


def test_path_table_and_touchpoints_give_the_same_result(tmp_path):
    st = AttributionSettings(markov_orders=(1, 2))
    a = attribute(journeys_from_touches(touch_rows()), st).attribution.filter(pl.col("model") != "time_decay")
    pt = tmp_path / "paths.csv"
    pl.DataFrame({"path": ["search > search > email", "direct", "email > search", "display"],
                  "total_conversions": [1, 1, 1, 0], "total_conversion_value": [10.0, 7.0, 3.0, 0.0],
                  "total_null": [0, 0, 0, 1]}).write_csv(pt)
    b = attribute(read_path_table(pt), st)
    assert "time_decay" not in b.attribution["model"].to_list()
    cols = ["model", "channel", "conversions", "value", "share"]
    pl.testing.assert_frame_equal(a.select(cols).sort("model", "channel"),
                                  b.attribution.select(cols).sort("model", "channel"))
    # collapse repeats and the last n touches
    c = journeys_from_touches(touch_rows(), collapse_repeats=True)
    assert np.diff(c.offsets).tolist() == [2, 1, 2, 1]
    d = journeys_from_touches(touch_rows(), max_path_length=1)
    assert [d.channels[i] for i in d.channel] == ["email", "direct", "search", "display"]


@pytest.mark.parametrize("body, exc, match", [
    ({"path": ["a > b", "b"], "total_conversions": [1, -2]}, InputError, "negative"),
    ({"path": ["a > b", ""], "total_conversions": [1, 2]}, InputError, "empty paths"),
    ({"path": ["a>b", "b"], "total_conversions": [1, 2]}, ConfigError, "set separator = '>'"),
    ({"path": ["a >  > b"], "total_conversions": [1]}, InputError, "empty channel"),
    ({"route": ["a > b"], "total_conversions": [1]}, InputError, "missing column 'path'"),
    ({"path": ["a > b"], "total_conversions": ["x"]}, InputError, "not numeric"),
])
def test_bad_path_tables_get_clear_errors(tmp_path, body, exc, match):
    p = tmp_path / "paths.csv"
    pl.DataFrame(body).write_csv(p)
    with pytest.raises(exc, match=match):
        read_path_table(p)


def test_bad_settings_name_the_key():
    with pytest.raises(ConfigError, match="did you mean 'lookback_days'"):
        parse_settings({"lookback_day": 3})
    with pytest.raises(ConfigError, match="markov_orders"):
        parse_settings({"markov_orders": [4]})
    with pytest.raises(ConfigError, match="separator"):
        parse_settings({"separator": ""})
    with pytest.raises(ConfigError, match="half_life_days"):
        parse_settings({"half_life_days": 0})


def test_per_segment_additive_models_sum_to_overall():
    rng = np.random.default_rng(3)
    paths = [list(rng.integers(0, 4, rng.integers(1, 5))) for _ in range(300)]
    conv = rng.integers(0, 2, 300).astype(float)
    j = make(paths, conv, null=1 - conv, value=conv * rng.uniform(5, 50, 300), customers=list(range(300)))
    segs = pl.DataFrame({"customer_id": list(range(300)), "club": [f"k{i % 3}" for i in range(300)]})
    res = attribute(j, AttributionSettings(markov_orders=(1,)), segs)
    att = res.attribution
    additive = ("first_touch", "last_touch", "linear", "time_decay", "position_based", "shapley_simplified")
    overall = att.filter(pl.col("breakdown") == "overall", pl.col("model").is_in(additive)).sort("model", "channel")
    parts = (att.filter(pl.col("breakdown") == "club", pl.col("model").is_in(additive))
             .group_by("model", "channel").agg(pl.col("conversions").sum(), pl.col("value").sum())
             .sort("model", "channel"))
    np.testing.assert_allclose(overall["conversions"], parts["conversions"], atol=1e-9)
    np.testing.assert_allclose(overall["value"], parts["value"], rtol=1e-12)
    assert set(att.filter(pl.col("breakdown") == "club")["segment"]) == {"k0", "k1", "k2"}
    assert set(res.removal["breakdown"]) == {"overall", "club"}


def test_identical_results_at_one_and_all_threads():
    rng = np.random.default_rng(11)
    paths = [list(rng.integers(0, 6, rng.integers(1, 7))) for _ in range(2000)]
    conv = rng.integers(0, 2, 2000).astype(float)
    j = make(paths, conv, null=1 - conv, value=conv * 12.5)
    st = AttributionSettings(markov_orders=(1, 2, 3))
    with numba_threads(1):
        a = attribute(j, st)
    with numba_threads(None):
        b = attribute(j, st)
    assert a.attribution.equals(b.attribution) and a.removal.equals(b.removal)
    assert a.transitions.equals(b.transitions)


def test_incrementality_sits_beside_the_attributed_conversions():
    from centile.attribution.compute import incrementality

    att = pl.DataFrame({"model": ["linear"] * 3, "breakdown": "overall", "segment": "all",
                        "channel": ["Email", "search", "newsletter"], "conversions": [100.0, 50.0, 30.0],
                        "value": 0.0, "share": 0.0})
    rows = []
    for camp, arm, method, inc in (("1", "treatment", "welch", 20.0), ("1", "treatment", "bootstrap", 99.0),
                                   ("2", "treatment", "welch", 5.0), ("3", "treatment", "welch", 7.0)):
        rows.append({"campaign": camp, "breakdown": "overall", "segment": "all", "arm": arm, "outcome": "orders",
                     "method": method, "n_arm": 100, "uplift_ci_low": 0.0, "uplift_ci_high": 0.5,
                     "incremental": inc})
    rows.append(rows[0] | {"breakdown": "region", "incremental": 1000.0})
    uplift = pl.DataFrame(rows)
    media = pl.DataFrame({"campaign": ["1", "2", "3"], "medium": ["email", "email", "catalogue"]})
    out, notes = incrementality(att, uplift, media, {"newsletter": "catalogue"})
    got = {r["channel"]: (r["incremental_conversions"], r["ratio"], r["campaigns"]) for r in out.iter_rows(named=True)}
    # one method per campaign as uplift.preferred_rows picks it (bootstrap first); the region breakdown
    # is left out; names match case-insensitively
    assert got["Email"] == (104.0, 100.0 / 104.0, 2)
    assert got["newsletter"] == (7.0, 30.0 / 7.0, 1)
    assert "search" not in got and any("matched to contact media by name" in n for n in notes)
    none, notes = incrementality(att, uplift, media.with_columns(medium=pl.lit("sale")))
    assert none is None and "no channel matches" in notes[0]


# --- memory: issue 12 ---------------------------------------------------------------------------


@given(journeys_st, stg.data())
def test_take_gathers_a_block_of_journeys_at_a_time_with_the_same_arrays(rows, data):
    import centile.attribution.journeys as jm

    j = make([r[0] for r in rows], [float(r[1] > 0) for r in rows], value=[r[3] for r in rows])
    picks = sorted(data.draw(stg.lists(stg.integers(0, j.n - 1), max_size=2 * j.n)))
    want_ch = [x for r in picks for x in j.channel[j.offsets[r]:j.offsets[r + 1]]]
    want_age = [x for r in picks for x in j.age_days[j.offsets[r]:j.offsets[r + 1]]]
    before = jm.TAKE_BLOCK
    try:
        for block in (1, 2, 5, before):
            jm.TAKE_BLOCK = block
            t = j.take(np.array(picks, np.int64))
            assert t.channel.dtype == np.int32 and t.age_days.dtype == np.float64
            assert t.channel.tolist() == want_ch and t.age_days.tolist() == want_age
            assert np.diff(t.offsets).tolist() == [int(j.offsets[r + 1] - j.offsets[r]) for r in picks]
            assert t.value.tolist() == [j.value[r] for r in picks]
            assert t.customer_id.to_list() == [j.customer_id[r] for r in picks]
    finally:
        jm.TAKE_BLOCK = before


def test_concat_empties_the_partition_list_and_puts_journeys_in_customer_order():
    from centile.attribution.journeys import _concat

    a = make([[0, 1], [1]], [1, 0], customers=[5, 9])
    b = make([[0], [0, 0, 1]], [1, 1], customers=[2, 7])
    parts = [a, b]
    j = _concat(parts)
    assert parts == []
    assert j.customer_id.to_list() == [2, 5, 7, 9]
    assert [j.channel[j.offsets[i]:j.offsets[i + 1]].tolist() for i in range(j.n)] == [[0], [0, 1], [0, 0, 1], [1]]


def test_segment_columns_take_only_the_breakdown_columns():
    from centile.attribution.compute import segment_columns

    seg = pl.DataFrame({"customer_id": [1, 2, 3], "club": ["a", None, "b"], "rfm_segment": ["x", "y", "x"],
                        "r": [1, 2, 3], "cluster": [0, 1, 0]})
    clubs = pl.DataFrame({"customer_id": [1, 3], "club": ["A", "B"], "tier": [1, 2], "score": [0.5, 0.7]})
    out = segment_columns([seg, clubs])
    assert out.columns == ["customer_id", "club", "rfm_segment"] and out["club"].to_list() == ["a", None, "b"]
    out = segment_columns([seg, clubs], ("tier",))
    assert out.sort("customer_id").rows() == [(1, 1), (2, None), (3, 2)]
    with pytest.raises(ConfigError, match="no column 'tiers'.*available: club, rfm_segment, r, cluster, tier, score"):
        segment_columns([seg, clubs], ("tiers",))
    assert segment_columns([None, None]) is None
