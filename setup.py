from setuptools import find_packages, setup

setup(
    name="mpn-nas",
    version="0.1.0",
    description="Multi-path neural networks with data-dependent routing as NNI search-space primitives",
    python_requires=">=3.10",
    packages=find_packages(include=["mpn_nas", "mpn_nas.*", "search_spaces", "search_spaces.*", "strategies",
                                    "strategies.*"]),
    install_requires=[
        # Upper bounds keep pip on the locally available wheels instead of pulling new CUDA builds.
        "torch>=2.1,<2.15",
        "torchvision>=0.16,<0.30",
        "nni==3.0",
        "pytorch-lightning>=2.0,<3",
        "torchmetrics>=1.0",
        "scikit-learn>=1.2",
        "matplotlib>=3.6",
        "setuptools<81",  # nnictl imports pkg_resources
    ],
    extras_require={
        "export": ["onnx>=1.14", "onnxruntime>=1.16"],
        # Epoch logs as TensorBoard event files (mpn_nas.run_logs); without it they are CSV. An extra: with
        # grpcio and its data server it is about 20 MB, more than the logs need.
        "tensorboard": ["tensorboard>=2.12"],
        # pytest-xdist: make test's workers; mutmut: make mutants
        "test": ["pytest>=7", "pytest-xdist>=3.5", "onnx>=1.14", "onnxruntime>=1.16", "mutmut>=3.8,<4"],
    },
    entry_points={
        "console_scripts": ["mpn-nas=mpn_nas.cli:main"],
        # Subcommands of `mpn-nas` from the layers above mpn_nas (a third-party package adds its own the same way).
        "mpn_nas.commands": [
            "search = strategies.cli:register",
            "spaces = search_spaces.cli:register",
        ],
    },
)
