"""A live console of a run in the browser: ``python -m beam_pipeline.console``."""
