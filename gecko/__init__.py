"""Gecko: versatile text embeddings distilled from large language models, in JAX.

`import gecko` is light: it imports neither TensorFlow nor the models. Use
`gecko.encode.encode` to embed texts, `gecko.models` for the Flax modules, and
`gecko.data.vocabularies` (TensorFlow) for SeqIO pipelines.
"""

import os as _os

from gecko import accelerators as _accelerators
from gecko import quiet_start as _quiet_start

__version__ = "0.1.0"

_accelerators.keep_libtpu_quiet()  # before JAX's first use (see gecko.accelerators)
_quiet_start.install()  # TensorFlow's start-up noise (see gecko.quiet_start)
# gs:// through gcsfs, which GCS emulators reach, not tf.io.gfile (gecko.data.paths).
_os.environ.setdefault("EPATH_USE_TF", "false")
