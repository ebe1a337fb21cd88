"""The testing kit: kinds and a strategy to test the platform and kinds built on it.

`tunelab.testing.kinds` has a trivial kind, a kind with a generated 10^9-candidate
space, a faulty kind (wrong result, error, hang, crash, a silent worker) and an episodic
kind (long evaluations with steps and checkpoints); `tunelab.testing.strategies` a
strategy installed through an entry point; `tunelab.testing.conformance` the checks
every kind must pass. None of them imports TVM or torch.
"""

from tunelab.testing.kinds import Episodic, Faulty, Quadratic, Trivial

TESTING_KINDS = (Trivial(), Quadratic(), Faulty(), Episodic())

__all__ = ["TESTING_KINDS", "Episodic", "Faulty", "Quadratic", "Trivial"]
