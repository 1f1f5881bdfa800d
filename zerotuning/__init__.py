"""ZeroTuning: initial-token attention scaling per head (Han et al., 2025). Not implemented yet (issue 5)."""
