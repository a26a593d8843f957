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
        pairs, inv = np.unique(np.stack([n, r], 1), axis=0, return_inverse=True)
        w = np.bincount(inv.ravel(), weights=w).astype(np.int64)
        n, r = pairs[:, 0], pairs[:, 1]
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
    """The medium's prior, per-customer (alpha, beta) and the rows of the priors table."""
    pr = fit_beta_binomial(n, r)

    def row(p: BetaPrior, segment: str | None, fallback: bool, customers: int, contacts: int) -> dict:
        return {"medium": medium, "arm": arm, "segment": segment, "alpha": p.alpha, "beta": p.beta,
                "prior_mean": p.mean, "loglik": p.loglik, "converged": p.converged, "fallback": fallback,
                "customers": customers, "contacts": contacts}

    rows = [row(pr, None, False, pr.customers, pr.contacts)]
    a = np.full(n.size, pr.alpha)
    b = np.full(n.size, pr.beta)
    if labels is not None:
        for k, name in enumerate(names):
            mask = labels == k
            seen = int(((n > 0) & mask).sum())
            sp = fit_beta_binomial(n[mask], r[mask]) if seen >= min_customers else None
            if sp is not None and sp.converged:
                a[mask], b[mask] = sp.alpha, sp.beta
                rows.append(row(sp, name, False, sp.customers, sp.contacts))
            else:
                rows.append(row(pr, name, True, seen, int(n[mask].sum())))
    return pr, a, b, rows


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
    ids = pl.DataFrame({"customer_id": customers})
    parts, priors = [], []
    labels, names = None, []
    if segments is not None:
        seg = segments.cast(pl.String).fill_null("(none)")
        names = sorted(seg.unique().to_list())
        labels = seg.replace_strict({x: k for k, x in enumerate(names)}, return_dtype=pl.Int64).to_numpy()
    for m in media:
        sub = responses.filter(pl.col("medium") == m)
        arms = {}
        for arm, ctrl in (("treatment", False), ("control", True)):
            a = ids.join(sub.filter(pl.col("control") == ctrl).select("customer_id", "contacts", "responses"),
                         on="customer_id", how="left").fill_null(0)
            n, r = a["contacts"].to_numpy(), a["responses"].to_numpy()
            pr, al, be, rows = _priors(n, r, labels, names, min_customers, m, arm)
            arms[arm] = (n, r, pr, al, be)
            priors.extend(rows)
        n, r, pr, al, be = arms["treatment"]
        nc, rc, prc, alc, bec = arms["control"]
        rate = (al + r) / (al + be + n)
        has_control = prc.contacts > 0
        crate = (alc + rc) / (alc + bec + nc) if has_control else None
        share = shares[m] if shares and m in shares else np.ones(customers.len())
        aff = (rate - crate if has_control else rate) * share
        parts.append(pl.DataFrame({
            "customer_id": customers, "medium": pl.Series([m] * customers.len(), dtype=pl.String),
            "contacts": n, "responses": r, "control_contacts": nc, "control_responses": rc,
            "response_rate": rate, "control_rate": pl.Series(crate, dtype=pl.Float64) if has_control
            else pl.Series([None] * customers.len(), dtype=pl.Float64),
            "assortment_share": share, "affinity": aff}))
    aff_df = pl.concat(parts) if parts else pl.DataFrame()
    schema = {"medium": pl.String, "arm": pl.String, "segment": pl.String, "alpha": pl.Float64,
              "beta": pl.Float64, "prior_mean": pl.Float64, "loglik": pl.Float64, "converged": pl.Boolean,
              "fallback": pl.Boolean, "customers": pl.Int64, "contacts": pl.Int64}
    return aff_df, pl.DataFrame(priors, schema=schema)
