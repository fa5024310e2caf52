"""Parse target data files in a child interpreter (see soak.analyze.load.TargetFiles).

    python -m soak.analyze.parse_worker OUT KIND PATH [KIND PATH ...]

KIND is process.jsonl, threads.jsonl or health.jsonl; the list of results (in the order
given) is pickled into OUT.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

from soak.analyze.load import load_target_file


def main(argv: list[str]) -> None:
    """Parse each PATH as its KIND and pickle the list of results into OUT."""
    out, pairs = argv[0], argv[1:]
    kinds, paths = pairs[::2], pairs[1::2]
    results = [load_target_file(kind, Path(path)) for kind, path in zip(kinds, paths, strict=True)]
    with open(out, "wb") as handle:
        pickle.dump(results, handle, protocol=pickle.HIGHEST_PROTOCOL)


if __name__ == "__main__":
    main(sys.argv[1:])
