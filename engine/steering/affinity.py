"""Medium affinity: response probabilities shrunk by empirical Bayes (beta-binomial).

For a medium (and arm), customer ``i`` had ``n_i`` contacts and ``r_i`` of them were
followed by an order within the response window. With ``p_i ~ Beta(a, b)`` and
``r_i | p_i ~ Binomial(n_i, p_i)``, the prior (a, b) maximises the marginal likelihood

    l(a, b) = sum_i [ln B(a + r_i, b + n_i - r_i) - ln B(a, b)]

(binomial coefficients are constant), fitted in (log a, log b) from the histogram of
(n, r) pairs -- integer counts, so any partitioning gives the same fit. The posterior
mean (a + r_i) / (a + b + n_i) is the customer's response probability: the prior mean
without history, the raw rate r_i / n_i as n_i grows.

With a segment per customer (``[steering] prior_by``) one prior is fitted per (medium,
arm, segment) from that segment's customers; a segment with fewer than
``min_customers`` contacted customers, or whose fit does not converge, uses the
medium's prior (``fallback`` in the priors table).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.optimize import minimize
from scipy.special import betaln


@dataclass(frozen=True)
class BetaPrior:
    """A fitted beta prior: ``alpha``, ``beta``, the log marginal likelihood, whether the
    optimiser converged, the customers and contacts behind it."""

    alpha: float
    beta: float
    loglik: float
    converged: bool
    customers: int
    contacts: int

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)


def _nll(theta: np.ndarray, n: np.ndarray, r: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray]:
    """Negative log marginal likelihood in (logit mean, log strength) and its gradient."""
    from scipy.special import digamma, expit

    mean, strength = expit(theta[0]), np.exp(theta[1])
    a, b = mean * strength, (1 - mean) * strength
    ll = w * (betaln(a + r, b + n - r) - betaln(a, b))
    da = (w * (digamma(a + r) - digamma(a + b + n) - digamma(a) + digamma(a + b))).sum()
    db = (w * (digamma(b + n - r) - digamma(a + b + n) - digamma(b) + digamma(a + b))).sum()
    # chain rule: a = m s, b = (1 - m) s; dm/dtheta0 = m (1 - m), ds/dtheta1 = s
    g0 = (da - db) * strength * mean * (1 - mean)
    g1 = (da * mean + db * (1 - mean)) * strength
    return -float(ll.sum()), -np.array([g0, g1])


#: the prior's strength alpha + beta is kept in [1, e^12]: below 1 the prior is U-shaped, which
#: customers with a single contact cannot tell from a flat one, and it would send their
#: posterior to about 0 or 1
STRENGTH_BOUNDS = (0.0, 12.0)


def fit_beta_binomial(n: np.ndarray, r: np.ndarray, weight: np.ndarray | None = None) -> BetaPrior:
    """Maximum marginal likelihood (alpha, beta) from contacts ``n`` and responses ``r``.

    Fitted in (logit of the prior mean, log of the strength alpha + beta), the strength
    bounded to [1, e^12] (see ``STRENGTH_BOUNDS``). Customers without contacts carry no
    information and are ignored. Without customers with two or more contacts the
    strength is not identified: a prior of strength 2 at the pooled rate is returned,
    flagged ``converged=False``.
    """
    n = np.asarray(n, np.int64)
    r = np.asarray(r, np.int64)
    w = np.ones(n.size, np.int64) if weight is None else np.asarray(weight, np.int64)
    keep = (n > 0) & (w > 0)
    n, r, w = n[keep], r[keep], w[keep]
    # the histogram of (n, r): the mergeable state
    if n.size:
        # one integer key per (n, r) pair (r <= n < radix), sorted as the pairs are
        radix = int(n.max()) + 1
        keys, inv = np.unique(n * radix + r, return_inverse=True)
        w = np.bincount(inv.ravel(), weights=w).astype(np.int64)
        n, r = keys // radix, keys % radix
    customers, contacts = int(w.sum()), int((w * n).sum())
    pooled = (float((w * r).sum()) + 0.5) / (contacts + 1.0)
    if customers < 2 or not (n > 1).any():
        return BetaPrior(pooled * 2.0, (1 - pooled) * 2.0, float("nan"), False, customers, contacts)
    x0 = np.array([np.log(pooled / (1 - pooled)), np.log(2.0)])
    res = minimize(_nll, x0, args=(n.astype(float), r.astype(float), w.astype(float)), jac=True,
                   method="L-BFGS-B", bounds=[(-15.0, 15.0), STRENGTH_BOUNDS])
    mean, strength = 1 / (1 + np.exp(-res.x[0])), np.exp(res.x[1])
    return BetaPrior(float(mean * strength), float((1 - mean) * strength), -float(res.fun), bool(res.success),
                     customers, contacts)


def posterior_mean(prior: BetaPrior, n: np.ndarray, r: np.ndarray) -> np.ndarray:
    """(alpha + r) / (alpha + beta + n) per customer."""
    return (prior.alpha + np.asarray(r, float)) / (prior.alpha + prior.beta + np.asarray(n, float))


def _priors(n: np.ndarray, r: np.ndarray, labels: np.ndarray | None, names: list[str], min_customers: int,
            medium: str, arm: str) -> tuple[BetaPrior, np.ndarray, np.ndarray, list[dict]]:
    """The medium's prior, (alpha, beta) per segment label (one entry without labels) and the
    rows of the priors table, from the contacts ``n`` and responses ``r`` of the contacted
    customers (customers without contacts carry no information)."""
    pr = fit_beta_binomial(n, r)

    def row(p: BetaPrior, segment: str | None, fallback: bool, customers: int, contacts: int) -> dict:
        return {"medium": medium, "arm": arm, "segment": segment, "alpha": p.alpha, "beta": p.beta,
                "prior_mean": p.mean, "loglik": p.loglik, "converged": p.converged, "fallback": fallback,
                "customers": customers, "contacts": contacts}

    rows = [row(pr, None, False, pr.customers, pr.contacts)]
    a = np.full(max(1, len(names)), pr.alpha)
    b = np.full(max(1, len(names)), pr.beta)
    if labels is not None:
        for k, name in enumerate(names):
            mask = labels == k
            seen = int(((n > 0) & mask).sum())
            sp = fit_beta_binomial(n[mask], r[mask]) if seen >= min_customers else None
            if sp is not None and sp.converged:
                a[k], b[k] = sp.alpha, sp.beta
                rows.append(row(sp, name, False, sp.customers, sp.contacts))
            else:
                rows.append(row(pr, name, True, seen, int(n[mask].sum())))
    return pr, a, b, rows


PRIOR_SCHEMA = {"medium": pl.String, "arm": pl.String, "segment": pl.String, "alpha": pl.Float64,
                "beta": pl.Float64, "prior_mean": pl.Float64, "loglik": pl.Float64, "converged": pl.Boolean,
                "fallback": pl.Boolean, "customers": pl.Int64, "contacts": pl.Int64}


@dataclass(frozen=True)
class Affinity:
    """Fitted priors and the contact counts behind them; the per-customer table is computed one
    block of customers at a time (:meth:`block`), never held for every customer at once.

    ``customers`` sorted ids; ``media`` in the plan's order; ``labels`` (int32, aligned with the
    customers) the prior segment or None; ``treat[m]``/``control[m]``: (alpha, beta) per label
    (control None without a control group); the counts are rows of the responses (customer
    position ``pos``, sorted; medium index ``med``; ``ctrl``; ``n``; ``r``); ``shares``: medium ->
    the customer's share of spend in the medium's categories (aligned with the customers)."""

    customers: pl.Series
    media: tuple[str, ...]
    priors: pl.DataFrame
    labels: np.ndarray | None
    treat: tuple[tuple[np.ndarray, np.ndarray], ...]
    control: tuple[tuple[np.ndarray, np.ndarray] | None, ...]
    pos: np.ndarray
    med: np.ndarray
    ctrl: np.ndarray
    n: np.ndarray
    r: np.ndarray
    shares: dict[str, np.ndarray] | None = None

    @property
    def height(self) -> int:
        return self.customers.len() * len(self.media)

    def counts(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(b - a, M) treated contacts, responses, control contacts, control responses."""
        lo, hi = np.searchsorted(self.pos, [a, b])
        M = len(self.media)
        out = [np.zeros((b - a, M), np.int64) for _ in range(4)]
        i, m, c = self.pos[lo:hi].astype(np.int64) - a, self.med[lo:hi].astype(np.int64), self.ctrl[lo:hi]
        for k, (arm, col) in enumerate(((False, self.n), (False, self.r), (True, self.n), (True, self.r))):
            sel = c == arm
            np.add.at(out[k], (i[sel], m[sel]), col[lo:hi][sel].astype(np.int64))
        return out[0], out[1], out[2], out[3]

    def _rates(self, a: int, b: int):
        n, r, nc, rc = self.counts(a, b)
        lab = self.labels[a:b] if self.labels is not None else np.zeros(b - a, np.int64)
        rate = np.empty(n.shape)
        crate = np.full(n.shape, np.nan)
        share = np.ones(n.shape)
        for j, m in enumerate(self.media):
            al, be = self.treat[j][0][lab], self.treat[j][1][lab]
            rate[:, j] = (al + r[:, j]) / (al + be + n[:, j])
            if self.control[j] is not None:
                alc, bec = self.control[j][0][lab], self.control[j][1][lab]
                crate[:, j] = (alc + rc[:, j]) / (alc + bec + nc[:, j])
            if self.shares and m in self.shares:
                share[:, j] = self.shares[m][a:b]
        has = np.array([c is not None for c in self.control])
        score = np.where(has[None, :], rate - np.where(has[None, :], crate, 0.0), rate) * share
        return n, r, nc, rc, rate, crate, share, score

    def scores(self, a: int, b: int) -> np.ndarray:
        """(b - a, M) affinity of customers a..b (see :func:`affinity_table`)."""
        return self._rates(a, b)[-1]

    def block(self, a: int, b: int) -> pl.DataFrame:
        """The rows of :func:`affinity_table` for customers a..b: customer by customer, media in order."""
        n, r, nc, rc, rate, crate, share, score = self._rates(a, b)
        M = len(self.media)
        return pl.DataFrame({
            "customer_id": self.customers.slice(a, b - a).gather(np.repeat(np.arange(b - a), M)),
            "medium": pl.Series(np.tile(np.array(self.media, dtype=object), b - a), dtype=pl.String),
            "contacts": n.ravel(), "responses": r.ravel(), "control_contacts": nc.ravel(),
            "control_responses": rc.ravel(), "response_rate": rate.ravel(),
            "control_rate": pl.Series(crate.ravel(), dtype=pl.Float64).fill_nan(None),
            "assortment_share": share.ravel(), "affinity": score.ravel()})

    def frames(self, size: int = 1 << 16):
        """The whole table, one block of ``size`` customers at a time."""
        total = self.customers.len()
        for a in range(0, total, size):
            yield self.block(a, min(total, a + size))

    def collect(self) -> pl.DataFrame:
        parts = list(self.frames())
        return pl.concat(parts) if parts else self.block(0, 0)


#: response rows read at a time when they are made compact
ROWS = 1 << 22


def _compact_rows(responses: pl.DataFrame, customers: pl.Series, media: list[str]):
    """Customer position (int32), medium index (int8), arm (bool), contacts and responses
    (int32) of every response row of a customer of ``customers`` and a medium of ``media``,
    sorted by customer position: about 14 bytes a row kept, the rows read a chunk of
    ``ROWS`` at a time (no full-length int64 or string temporaries)."""
    numeric = (responses["customer_id"].dtype.is_numeric() and customers.dtype.is_numeric()
               and customers.is_sorted() and not customers.has_nulls())
    ref = customers.to_numpy() if numeric else None
    lookup = None if numeric else pl.DataFrame({"customer_id": customers, "_pos": np.arange(customers.len())})
    mdt = responses["medium"].dtype
    codes = None
    if isinstance(mdt, pl.Enum):  # compare the physical codes, not strings
        cats = list(mdt.categories)
        codes = np.array([media.index(c) if c in media else -1 for c in cats] + [-1], np.int8)
    out: list[list[np.ndarray]] = [[], [], [], [], []]
    for a in range(0, responses.height, ROWS):
        ch = responses.slice(a, ROWS)
        if numeric:
            want = ch["customer_id"].cast(customers.dtype, strict=False)
            ok = want.is_not_null().to_numpy()
            w = want.fill_null(0).to_numpy()
            pos = np.searchsorted(ref, w)
            inside = ok & (pos < ref.size)
            ok = inside.copy()
            ok[inside] = ref[pos[inside]] == w[inside]
        else:
            j = pl.DataFrame({"customer_id": ch["customer_id"].cast(customers.dtype, strict=False)}).join(
                lookup, on="customer_id", how="left", maintain_order="left")["_pos"]
            ok = j.is_not_null().to_numpy()
            pos = j.fill_null(0).to_numpy()
        if codes is not None:
            phys = ch["medium"].to_physical().fill_null(len(codes) - 1).to_numpy().astype(np.int64)
            med = codes[np.minimum(phys, len(codes) - 1)]
        else:
            med = np.full(ch.height, -1, np.int8)
            mcol = ch["medium"] if mdt == pl.String else ch["medium"].cast(pl.String)
            for k, m in enumerate(media):
                med[(mcol == m).fill_null(False).to_numpy()] = k
        sel = np.flatnonzero(ok & (med >= 0))
        out[0].append(pos[sel].astype(np.int32))
        out[1].append(med[sel])
        out[2].append(ch["control"].cast(pl.Boolean).fill_null(False).to_numpy()[sel])
        out[3].append(ch["contacts"].fill_null(0).to_numpy()[sel].astype(np.int32))
        out[4].append(ch["responses"].fill_null(0).to_numpy()[sel].astype(np.int32))
    cols = []
    for t in (np.int32, np.int8, np.bool_, np.int32, np.int32):  # one column at a time: no two copies
        parts = out.pop(0)
        cols.append(np.concatenate(parts) if parts else np.zeros(0, t))
        del parts
    order = np.argsort(cols[0], kind="stable")
    for k in range(len(cols)):
        cols[k] = cols[k][order]
    return tuple(cols)


def fit_affinity(responses: pl.DataFrame, customers: pl.Series, media: list[str],
                 shares: dict[str, np.ndarray] | None = None, segments: pl.Series | None = None,
                 min_customers: int = 200) -> Affinity:
    """Fit the priors of every (medium, arm[, segment]) from the contacted customers' counts; see
    :func:`affinity_table` for the parameters. Customers are positions in ``customers`` (sorted)."""
    labels, names = None, []
    if segments is not None:
        seg = segments.cast(pl.String).fill_null("(none)")
        names = sorted(seg.unique().to_list())
        labels = seg.replace_strict({x: k for k, x in enumerate(names)}, return_dtype=pl.Int32).to_numpy()
    p_, m_, c_, n_, r_ = _compact_rows(responses, customers, media)
    priors, treat, control = [], [], []
    for j, m in enumerate(media):
        arms = {}
        for arm, ctrl in (("treatment", False), ("control", True)):
            sel = (m_ == j) & (c_ == ctrl)
            lab = labels[p_[sel]] if labels is not None else None
            pr, al, be, rows = _priors(n_[sel].astype(np.int64), r_[sel].astype(np.int64), lab, names,
                                       min_customers, m, arm)
            arms[arm] = (pr, al, be)
            priors.extend(rows)
        treat.append(arms["treatment"][1:])
        control.append(arms["control"][1:] if arms["control"][0].contacts > 0 else None)
    return Affinity(customers, tuple(media), pl.DataFrame(priors, schema=PRIOR_SCHEMA), labels, tuple(treat),
                    tuple(control), p_, m_, c_, n_, r_, shares)


def affinity_table(responses: pl.DataFrame, customers: pl.Series, media: list[str],
                   shares: dict[str, np.ndarray] | None = None, segments: pl.Series | None = None,
                   min_customers: int = 200) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per customer and medium: contacts, responses, shrunk rates and the affinity.

    Parameters
    ----------
    responses : DataFrame
        customer_id, medium, control, contacts, responses (``sql/steering_responses.sql``).
    customers : Series
        The customers to score (sorted), ``customer_id``.
    media : list of str
        The media, in the plan's order.
    shares : dict, optional
        medium -> the customer's share of spend in the medium's categories (aligned with
        ``customers``); multiplies the response.
    segments : Series of str, optional
        The customer's segment (aligned with ``customers``; null: the segment
        ``(none)``): one prior per (medium, arm, segment), see the module docstring.
    min_customers : int
        Contacted customers a segment needs for a prior of its own.

    Returns
    -------
    affinity : DataFrame
        customer_id, medium, contacts, responses, control_contacts, control_responses,
        response_rate, control_rate (null without a control group), assortment_share,
        affinity (incremental response when the medium had a control group, else the
        shrunk response; times the assortment share).
    priors : DataFrame
        medium, arm (treatment / control), segment (null: the medium's prior), alpha,
        beta, prior_mean, loglik, converged, fallback (the segment uses the medium's
        prior), customers, contacts.
    """
    model = fit_affinity(responses, customers, media, shares, segments, min_customers)
    return model.collect(), model.priors
