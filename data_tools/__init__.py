"""Command-line data tools: the train/eval split, the demo set, safe archive extraction.

They build on ``app`` (image reading in ``app.images``, atomic writes); ``app`` never imports them.
"""
