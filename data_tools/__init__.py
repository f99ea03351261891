"""Command-line data tools: the train/eval split, the demo set, safe archive extraction.

They build on ``app`` (image reading in ``app.data.images``, atomic writes in
``app.util.atomic``); ``app`` never imports them.
"""
