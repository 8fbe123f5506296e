"""Runs one command and prints its wall time, CPU time and the peak RSS of its largest process (JSON).

Peak RSS and CPU time come from getrusage(RUSAGE_CHILDREN), which covers every descendant that was
waited for — so a kfp.local run's component subprocesses count too.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time


def main() -> None:
    command = sys.argv[1:]
    started = time.perf_counter()
    completed = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_kib = usage.ru_maxrss
    print(
        json.dumps(
            {
                "returncode": completed.returncode,
                "seconds": wall,
                "peak_rss_mib": peak_kib / 1024,
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "stderr": completed.stderr[-2000:],
            }
        )
    )


if __name__ == "__main__":
    main()
