"""The training application: config, data, engine, callbacks, metrics, reports.

Importing ``app`` (every entry point does so before Paddle) quietens Paddle's import-time
chatter: the C++ INFO log lines and the "No ccache found" warning, which concern building
custom operators, not training. Set GLOG_minloglevel yourself to see the C++ logs again.
"""
import os
import warnings

os.environ.setdefault("GLOG_minloglevel", "2")
warnings.filterwarnings("ignore", message="No ccache found")
# Paddle warns about these on every epoch; neither concerns the user.
warnings.filterwarnings("ignore", message="When training, we now always track global mean")
warnings.filterwarnings("ignore", message="To copy construct from a tensor")
