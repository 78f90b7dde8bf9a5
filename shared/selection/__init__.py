"""Choosing a model: recommendations from prices, tiers and this deployment's own jobs
(`recommendations`), and side-by-side comparisons with a vote (`comparisons`)."""
