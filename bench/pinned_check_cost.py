"""What checking the pinned checksums of local data-dir copies costs: every pinned registry set resolved
from QRESAFE_DATA_DIR twice in one process (the first hashes each file, the second is memoised by size
and mtime). Run: QRESAFE_DATA_DIR=../shared/data python bench/pinned_check_cost.py"""

import os
import time

from qresafe_exp.data.registry import DATASETS, resolve_file


def main() -> None:
    data_dir = os.environ["QRESAFE_DATA_DIR"]
    names = [name for name, spec in DATASETS.items() if spec.sha256]
    timings = []
    for _ in range(2):
        started = time.perf_counter()
        paths = {resolve_file(name, data_dir, None) for name in names}
        timings.append((time.perf_counter() - started) * 1000)
    size = sum(os.path.getsize(p) for p in paths)
    print(
        f"{len(names)} pinned sets ({len(paths)} files, {size / 1e6:.2f} MB): first resolve {timings[0]:.0f} ms "
        f"(hashes every file), repeat {timings[1]:.1f} ms"
    )


if __name__ == "__main__":
    main()
