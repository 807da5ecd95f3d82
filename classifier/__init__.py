"""The evidence desk: news feeds in, editor-reviewed evidence for forecasts out.

Read `records.py` (what crosses a stage) and `pipeline.py` (the order) first.
"""

__version__ = "0.1.0"
USER_AGENT = f"evidence-desk/{__version__} (+https://github.com/evidence-desk/evidence-desk)"
