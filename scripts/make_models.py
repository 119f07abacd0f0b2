#!/usr/bin/env python
"""Export the benchmark/test model zoo to ONNX (CLI over scripts/model_zoo.py).

    python scripts/make_models.py [--out DIR] [--only NAME ...] [--force]

Default output: $FLUIDML_TVM_CACHE or ~/.cache/fluidml-tvm/models (+ manifest.json).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from model_zoo import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
