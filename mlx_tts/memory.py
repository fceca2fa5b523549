"""Process memory figures, for the CLI, the quality reports and the benchmarks."""

import resource
import sys


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    On Linux this is VmHWM, the high-water mark of this process's own memory: `ru_maxrss` would also count
    the peak of a parent that forked it (the kernel carries it across exec)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # macOS reports bytes, Linux KiB
