"""Evaluation results and the report: results.json, results.md and plots (no recipe's metric code)."""
