"""A small run of the churn benchmark (python -m eval.bench_load): a real `policyqa serve`
answers two clients while one document is uploaded, replaced and removed. Every answer is a
200 from a complete, published index version. The latency ratio is the benchmark's to
report (a timed test would only measure the other processes on the machine)."""

from __future__ import annotations


def test_answers_during_churn_are_all_200_from_published_versions(tmp_path):
    from eval.bench_load import format_table, run

    report = run(clients=2, documents=1, seconds=3.0, think_s=0.2, seed=1, work=tmp_path)
    print("\n" + format_table(report))
    assert [(change.action, change.status, change.error) for change in report.changes] == [
        ("upload", 201, None), ("replace", 201, None), ("remove", 200, None)]
    assert report.versions == 4  # the seed version and one per change
    for stats in (report.outside, report.churn):
        assert stats.requests > 0
        assert stats.errors == 0, report.error_examples
        assert stats.version_violations == 0
