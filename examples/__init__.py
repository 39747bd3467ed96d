"""Runnable examples for trio_durable."""
