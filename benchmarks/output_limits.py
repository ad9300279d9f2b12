"""What a flooding command costs the orchestrator: N MB of stdout through the process runner with a
stage's output limits (the run log capped at log_mb, the log file at output_mb).

  .venv/bin/python benchmarks/output_limits.py [--mb 200] [--line-bytes 4096] [--output-mb 256] [--log-mb 4]

The command is node writing N MB of lines straight to the pipe. Prints what reached the run log, what
the log file holds, the wall time and this process's peak memory before and after:

  RESULT output_seconds=...  RESULT event_log_bytes=...  RESULT log_file_bytes=...
  RESULT output_killed=0|1   RESULT peak_rss_mb_before=...  RESULT peak_rss_mb_after=...
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sevenp_pipeline.resources.processes import MB, ExecuteRequest, ProcessRunner

FLOOD = """
const fs = require('fs');
const line = Buffer.from('x'.repeat(Number(process.argv[2]) - 1) + '\\n');
const total = Number(process.argv[1]) * 1024 * 1024;
for (let sent = 0; sent < total; sent += line.length) {
  let done = 0;
  while (done < line.length) {
    try { done += fs.writeSync(1, line, done); } catch (e) { if (e.code !== 'EAGAIN') throw e; }
  }
}
"""


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--line-bytes", type=int, default=4096)
    parser.add_argument("--output-mb", type=int, default=256)
    parser.add_argument("--log-mb", type=float, default=4)
    args = parser.parse_args()
    before = _peak_mb()
    sent: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "flood.log"
        started = time.monotonic()
        outcome = ProcessRunner().run(ExecuteRequest(
            argv=["node", "-e", FLOOD, str(args.mb), str(args.line_bytes)], cwd=Path(tmp), label="flood",
            timeout_seconds=600, log_path=log_path, log_limit_bytes=int(args.log_mb * MB),
            output_limit_bytes=args.output_mb * MB), log=lambda message: sent.append(len(message)))
        seconds = time.monotonic() - started
        size = log_path.stat().st_size
    print(f"RESULT output_seconds={seconds:.2f}")
    print(f"RESULT event_log_bytes={sum(sent)}")
    print(f"RESULT log_file_bytes={size}")
    print(f"RESULT output_killed={int(outcome.output_exceeded)}")
    print(f"RESULT peak_rss_mb_before={before:.0f}")
    print(f"RESULT peak_rss_mb_after={_peak_mb():.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
