"""Shared test set-up: the repository root on sys.path so ``tests.corpus`` imports, and
hypothesis writing nothing into the working tree (no example database, patches in the temp dir)."""

import os
import sys
import tempfile

import pytest
import torch
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

torch.set_num_threads(1)
# Timed choices (fuse or not, batch or not) are remembered in a cache folder: the tests keep
# theirs in a fresh folder of their own, never the user's.
os.environ["RETIARII_CACHE_DIR"] = tempfile.mkdtemp(prefix="retiarii-ir-test-cache-")

set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "retiarii-ir-hypothesis"))
settings.register_profile("retiarii", database=None)
settings.load_profile("retiarii")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def traced():
    """Corpus cases traced once per run: ``traced(name) -> (model, args, kwargs, graph)``."""
    import retiarii_ir as ir
    from tests.corpus import CORPUS

    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            case = CORPUS[name]
            model = case.build().eval()
            args, kwargs = case.example_args(), case.example_kwargs()
            cache[name] = (model, args, kwargs, ir.trace(model, args, kwargs))
        return cache[name]

    return get


@pytest.fixture(scope="module")
def digits():
    """The first 256 training images of scikit-learn's digits and their labels (one-shot tests)."""
    from retiarii_ir.runtime.training.data import dataset

    data = dataset("digits")
    return data.train_x[:256], data.train_y[:256]
