"""Sweeps described without Ray: the spec file and its checks, the seed policy, and the ranking of trials."""
