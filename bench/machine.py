"""Machine facts the benchmark scripts report: CPU model and how busy the CPUs are."""

import os
import platform


def cpu_busy_seconds(cpus):
    """Busy time (user+nice+system+irq+softirq+steal) of these CPUs from
    /proc/stat, in seconds; None where /proc/stat is unavailable."""
    want = {f"cpu{c}" for c in cpus}
    busy = 0
    try:
        with open("/proc/stat") as f:
            for line in f:
                parts = line.split()
                if parts and parts[0] in want:
                    v = [int(x) for x in parts[1:9]]
                    busy += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    except OSError:
        return None
    return busy / os.sysconf("SC_CLK_TCK")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
