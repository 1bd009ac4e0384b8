"""Vendor NPU compilers (RKNN-Toolkit2, Vela) as optional referees, each in its own environment."""
