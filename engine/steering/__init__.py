"""Customer steering: medium affinity, a budget per customer and optimised contact plans."""
