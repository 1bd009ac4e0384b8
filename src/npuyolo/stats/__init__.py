"""Matched statistics and the bootstrap over them: numbers only (numpy), no model, no Ultralytics."""
