"""Basket analysis per segment and product recommendations per customer."""

from centile.registry import lazy_exports

# the names below are imported from their modules when first used (see lazy_exports)
__getattr__, __dir__ = lazy_exports(__name__, {
    "centile.baskets.compute": ("BasketsResult", "basket_lines", "baskets_from", "baskets_summary_doc", "compute_baskets", "count_itemsets", "rules_from_counts", "write_baskets",),
    "centile.baskets.job": ("run_baskets", "run_recommend",),
    "centile.baskets.lines": ("basket_items",),
    "centile.baskets.recommend": ("RecommendResult", "compute_recommendations", "evaluate", "recommend_from", "recommend_lines", "recommend_summary_doc", "topn_metrics", "write_recommendations",),
    "centile.baskets.settings": ("BasketSettings", "RecommendSettings", "basket_settings", "parse_baskets", "parse_recommend", "recommend_settings",),
})

__all__ = ["BasketSettings", "BasketsResult", "RecommendResult", "RecommendSettings", "basket_items", "basket_lines", "basket_settings", "baskets_from", "baskets_summary_doc", "compute_baskets", "compute_recommendations", "count_itemsets", "evaluate", "parse_baskets", "parse_recommend", "recommend_from", "recommend_lines", "recommend_settings", "recommend_summary_doc", "rules_from_counts", "run_baskets", "run_recommend", "topn_metrics", "write_baskets", "write_recommendations"]
