"""The planted-answer benchmark proves its winner before counting hits: the planted
architecture must lead every other one trained alone by more than 2 standard errors."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from oneshot_spaces import Proof  # noqa: E402

PLANTED = {"op": "conv"}


def proof(*rows):
    return Proof([(sum(accs) / len(accs), list(accs), sample) for accs, sample in rows])


def test_a_clear_lead_proves_the_planted_answer():
    p = proof(([0.99, 0.98, 0.99], PLANTED), ([0.95, 0.96, 0.95], {"op": "pool"}))
    assert p.margin == pytest.approx(0.0333, abs=1e-4)
    # variances 3.33e-5 and 3.33e-5 over 3 seeds each: sqrt(2 * 1.11e-5)
    assert p.standard_error == pytest.approx(0.00471, abs=1e-5)
    assert p.holds(PLANTED)


def test_a_lead_within_the_seed_noise_proves_nothing():
    # 0.2 points ahead on the mean, while one of its seeds is a point below the others
    p = proof(([0.992, 0.980, 0.997], PLANTED), ([0.986, 0.989, 0.989], {"op": "pool"}))
    assert p.margin > 0 and not p.holds(PLANTED)


def test_another_winner_is_no_proof_of_the_planted_one():
    p = proof(([0.99, 0.99, 0.99], {"op": "pool"}), ([0.90, 0.91, 0.90], PLANTED))
    assert not p.holds(PLANTED)


def test_every_other_architecture_must_trail_by_the_noise_not_just_the_runner_up():
    # the runner-up trails clearly, but a noisier third one is within 2 standard errors
    p = proof(([0.99, 0.99, 0.99], PLANTED), ([0.95, 0.95, 0.95], {"op": "pool"}),
              ([0.99, 0.90, 0.93], {"op": "skip"}))
    assert p.margin == pytest.approx(0.04) and not p.holds(PLANTED)


def test_one_seed_proves_nothing():
    assert not proof(([0.99], PLANTED), ([0.50], {"op": "pool"})).holds(PLANTED)
