"""The storage initializer's command line, over KServe's own download code (kserve_storage).

Arguments come in pairs, `SOURCE_URI DEST_DIR ...`, as KServe's init container receives them; the S3
settings come from the environment the controller derives from the storage Secret's annotations.
A failed download exits 1 with one line, as the init container does, so the pod never starts.
"""

from __future__ import annotations

import os
import sys

from kserve_storage import Storage


def main(argv: list[str]) -> int:
    """Downloads each source into its destination; returns the process exit code."""
    if not argv or len(argv) % 2:
        print("usage: initialize.py SOURCE_URI DEST_DIR [SOURCE_URI DEST_DIR ...]", file=sys.stderr)
        return 1
    sources, destinations = argv[0::2], argv[1::2]
    for destination in destinations:
        os.makedirs(destination, exist_ok=True)
    try:
        Storage.download_files(sources, destinations)
    except Exception as error:  # noqa: BLE001 - any failure stops the pod, with the reason
        print(f"storage initialization failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
