"""`make bench`: run every benchmark present, each side by side with its peer, and collect the
printed summaries into bench/out/summary.txt (ratios go into bench/RESULTS.md by hand after
review, with the date and the machine's load noted)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["issue", "ocsp", "crl", "acme", "est", "scep", "revoke", "ike", "attest", "ha"]


def main() -> int:
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    only = set(sys.argv[1:])
    failed = []
    with (out / "summary.txt").open("w") as summary:
        for name in ORDER:
            script = HERE / f"{name}.py"
            if not script.exists() or (only and name not in only):
                continue
            print(f"== bench/{name}.py", flush=True)
            t0 = time.monotonic()
            proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=False)
            text = proc.stdout + (proc.stderr if proc.returncode else "")
            print(text, flush=True)
            summary.write(f"== bench/{name}.py ({time.monotonic() - t0:.0f} s, exit {proc.returncode})\n{text}\n")
            if proc.returncode:
                failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
