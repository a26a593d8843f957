"""Basket analysis per segment and product recommendations per customer."""

from centile.baskets.compute import (
    BasketsResult,
    basket_lines,
    baskets_from,
    baskets_summary_doc,
    compute_baskets,
    count_itemsets,
    rules_from_counts,
    write_baskets,
)
from centile.baskets.job import run_baskets, run_recommend
from centile.baskets.lines import basket_items
from centile.baskets.recommend import (
    RecommendResult,
    compute_recommendations,
    evaluate,
    recommend_from,
    recommend_lines,
    recommend_summary_doc,
    topn_metrics,
    write_recommendations,
)
from centile.baskets.settings import (
    BasketSettings,
    RecommendSettings,
    basket_settings,
    parse_baskets,
    parse_recommend,
    recommend_settings,
)

__all__ = ["BasketSettings", "BasketsResult", "RecommendResult", "RecommendSettings", "basket_items", "basket_lines",
           "basket_settings", "baskets_from", "baskets_summary_doc", "compute_baskets", "compute_recommendations",
           "count_itemsets", "evaluate", "parse_baskets", "parse_recommend", "recommend_from", "recommend_lines",
           "recommend_settings", "recommend_summary_doc", "rules_from_counts", "run_baskets", "run_recommend",
           "topn_metrics", "write_baskets", "write_recommendations"]
