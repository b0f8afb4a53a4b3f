"""The verifier gives the same verdicts inside Ray tasks and Ray actors (a ~150-problem subset per benchmark)."""
import pytest

from tests.evaluation.reference import REFERENCE_BENCHMARKS, reference_pairs
from tests.evaluation.test_verifier import ADVERSARIAL

SUBSET = 150


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_reference_solutions_in_ray_actors(ray_cluster):
    ray = ray_cluster

    @ray.remote(num_cpus=0.5)
    class Judge:
        def run(self, responses, golds):
            from evaluation.verifier import verify_batch
            return [v.score for v in verify_batch(responses, golds)]

    judges = [Judge.remote() for _ in range(2)]
    for name in REFERENCE_BENCHMARKS:
        triples = reference_pairs(name, limit=SUBSET)
        golds = [t[1] for t in triples]
        own = ray.get(judges[0].run.remote([t[0] for t in triples], golds))
        other = ray.get(judges[1].run.remote([t[2] for t in triples], golds))
        assert sum(own) / len(own) >= 0.99, name
        assert 1 - sum(other) / len(other) >= 0.99, name


@pytest.mark.slow
def test_adversarial_in_ray_task(ray_cluster):
    ray = ray_cluster

    @ray.remote(num_cpus=0.5)
    def judge(responses):
        import time
        from evaluation.verifier import verify
        out = []
        for r in responses:
            start = time.monotonic()
            v = verify(r, "5")
            out.append((v.score, v.reason, time.monotonic() - start))
        return out

    results = ray.get(judge.remote(ADVERSARIAL + ["\\boxed{5}", "\\boxed{\\frac{10}{2}}"]))
    assert [s for s, _, _ in results] == [0.0] * len(ADVERSARIAL) + [1.0, 1.0]
    assert max(t for _, _, t in results) < 5.0
