"""`python -m gecko.fret --gin_file=gin/runs/fret.gin ...`: the FRet pipeline on one machine
(see `gecko.fret.pipeline`; `gecko.fret.beam` runs the same stages on Apache Beam)."""

import sys

from gecko.fret import pipeline

if __name__ == "__main__":
  sys.exit(pipeline.main(sys.argv[1:]))
