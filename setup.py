"""prompt_tuning: Prompt Tuning (Lester et al. 2021) on a frozen T5, in JAX."""
import setuptools

setuptools.setup(
    name="prompt_tuning",
    version="0.1.0",
    description="Prompt tuning for a frozen T5X-compatible T5 in JAX/Flax.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["prompt_tuning", "prompt_tuning.*"])
    + ["prompt_tuning.gin_configs"],
    # gin_configs/ lives at the top of the repository but installs inside the package, so
    # gin file names resolve from any working directory.
    package_dir={"prompt_tuning.gin_configs": "gin_configs"},
    package_data={
        "prompt_tuning.gin_configs": ["*.gin", "*/*.gin"],
        "prompt_tuning.data": ["assets/*", "assets/wordnet/*"],
        "prompt_tuning.pretrained": ["t5_1_1_mini/*", "t5_1_1_mini_prompts/*", "llama_mini/*"],
    },
    install_requires=[
        "jax>=0.4.30",
        "flax>=0.10",
        "optax>=0.2.3",
        "gin-config>=0.5.0",
        "seqio>=0.0.19",
        "tensorflow>=2.16",
        "tensorflow-text>=2.16",
        "tensorflow-datasets>=4.9",
        "orbax-checkpoint>=0.6",
        # orbax lists a gs:// MODEL_DIR's steps through it (it asks whether the bucket has a
        # hierarchical namespace) but does not require it.
        "google-cloud-storage>=3.0",
        "tensorstore>=0.1.60",
        "sentencepiece>=0.2",
        "safetensors>=0.4",
        "absl-py>=1.0",
        "tensorboard>=2.16",
        "msgpack>=1.0",
        "numpy>=1.24",
    ],
    extras_require={
        # gcp-storage-emulator: the local Cloud Storage of tests/test_gcs.py.
        # matplotlib: tests/test_paper_ablations.py checks the plots the ablations draw.
        "test": ["pytest>=7", "pytest-xdist>=3", "gcp-storage-emulator>=2024.8.3",
                 "matplotlib>=3.7"],
        "parity": ["torch", "transformers>=4.40", "peft>=0.10"],
        "plots": ["matplotlib>=3.7"],
    },
)
