"""Batch state (canvas), the diffusion loop and per-slot scoring."""
