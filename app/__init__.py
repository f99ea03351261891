"""The training application: config, data, engine, callbacks, metrics, reports."""
