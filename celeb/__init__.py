"""celeb: CelebA attribute classifiers and conditional β-VAEs, from annotation files to reviewed sweeps.

Importing the package has no side effects; each submodule owns one idea (annotations, splits,
image cache, models, training loop, ...).
"""

__version__ = "0.1.0"
