"""Layouts chosen for the whole graph: the planners (FluidML chain DP, exact search) and the measured cost records."""
