"""Evaluation helpers: perplexity, accuracy and speech metrics."""
