"""Evaluations: how good is the judge (judge_check) — and, next, the trained models."""
