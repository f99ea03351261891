"""The training application: config, data, engine, callbacks, metrics, reports.

Importing ``app`` (every entry point does so before Paddle) quietens Paddle's import-time
chatter: the C++ INFO log lines and the "No ccache found" warning, which concern building
custom operators, not training. Set GLOG_minloglevel yourself to see the C++ logs again.

On AMD CPUs it also sets MKL_DEBUG_CPU_TYPE=5 (unless already set). Paddle 3.3.1's CPU
convolutions are im2col + GEMM from the MKL-ML it bundles (2019.0.5), which on a non-Intel
CPU picks its slow generic code path; this variable, honoured by MKL up to 2020.0, makes
it use its AVX2 kernels: the TowerNet training step is ~2x faster on AMD EPYC
(bench/README.md). Same maths; only the GEMM kernels change. It must be in the environment
before MKL initialises, hence here. Intel CPUs are left alone (there it would cap MKL at AVX2).
"""
import os
import warnings

os.environ.setdefault("GLOG_minloglevel", "2")


def _cpu_vendor() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


if _cpu_vendor() == "AuthenticAMD":
    os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")
warnings.filterwarnings("ignore", message="No ccache found")
# Paddle warns about these on every epoch; neither concerns the user.
warnings.filterwarnings("ignore", message="When training, we now always track global mean")
warnings.filterwarnings("ignore", message="To copy construct from a tensor")
