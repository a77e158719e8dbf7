"""The tuning-lever experiments, run on a target kept by `BENCH_KEEP=1 make bench`.

Experiments only: nothing here runs in `make bench` itself; the results (levers.md,
ansible-levers.md, NOTES.md) are quoted by its report.
"""
