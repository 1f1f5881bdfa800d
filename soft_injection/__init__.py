"""Soft injection of task embeddings into attention heads (Park & Rhee, 2025). Not implemented yet (issue 4)."""
