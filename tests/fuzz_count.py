"""How many generated inputs each fuzz test file tried: runs the fuzz tests (``-k fuzz``) with
hypothesis's statistics and prints, per file, the passing and failing cases, then the total.
The README's fuzzing figures are this script's output: ``python tests/fuzz_count.py``."""

from __future__ import annotations

import collections
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# pytest's order matters here as in pyproject.toml: the plugins' tests first.
PATHS = [*sorted(str(p.relative_to(REPO)) for p in REPO.glob("plugins/*/tests")), "tests"]
TEST = re.compile(r"^(\S+\.py)::\S+:$")
CASES = re.compile(r"(\d+) passing, (\d+) failing")


def main() -> int:
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "fuzz",
                          "--hypothesis-show-statistics", *PATHS], cwd=REPO, capture_output=True, text=True)
    passing: collections.Counter[str] = collections.Counter()
    failing: collections.Counter[str] = collections.Counter()
    current = None
    for line in run.stdout.splitlines():
        if found := TEST.match(line.strip()):
            current = found.group(1)
        elif (cases := CASES.search(line)) and current is not None:
            passing[current] += int(cases.group(1))
            failing[current] += int(cases.group(2))
    for name in sorted(passing):
        print(f"{passing[name]:>7} passing {failing[name]:>3} failing  {name}")
    print(f"{sum(passing.values()):>7} passing {sum(failing.values()):>3} failing  in {len(passing)} files "
          f"({run.stdout.strip().splitlines()[-1] if run.stdout.strip() else 'no pytest summary'})")
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
