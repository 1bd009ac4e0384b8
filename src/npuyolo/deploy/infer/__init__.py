"""Using a deployed file: `predict` (images in, boxes out) and `latency` (timed forward passes)."""
