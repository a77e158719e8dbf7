"""`make bench` (issue 5): deploy to a throwaway local target and measure, in ONE run:

  * converge: cold (fresh target -> all healthy) and warm (second run) wall time, the warm
    run's changed count, image build/load tasks that changed, tasks over 2 s and the
    slowest ten tasks (ansible.posix.profile_tasks, enabled in ansible.cfg);
  * the request path with wrk on 127.0.0.1 through the published NGINX port, at 16 and 64
    connections: NGINX's own /health (the proxy's ceiling), the app's /health through NGINX
    (/app-health, see below) and / (Redis INCR + PostgreSQL write and read);
  * the same NGINX image alone in the same target (no backend), same port and path;
  * recovery: the app container removed and recreated by a converge -> first 200 on /;
  * the baseline, the seed's way (bench/baseline/: Flask's dev server, one process, a new
    Redis and PostgreSQL connection per request), deployed the same way (site.yml on the
    same target, the app image swapped), and every / figure as a ratio to it.

It prints a markdown table and writes out/PERFORMANCE.md (`make docs` copies it to docs/).
Everything it creates on this machine is named bench-* and removed at the end, except the
bench/baseline:<hash> image (kept so later runs skip its build). Logs of every converge and wrk run: bench/out/<run>/.

NGINX answers `location = /health` itself, so the app's /health is not reachable through
the role's server blocks. After the converges it measures, the benchmark adds one location
to the deployed file on its throwaway target, `location = /app-health` (proxied to the
app's /health like `location /`), and reloads NGINX (Target.patch_nginx); when the role's
template has that location already, nothing is added. The HTTPS port, when the stack
publishes one, gets a `/` row too.

Environment: BENCH_DURATION (s per wrk run, default 15), BENCH_WARMUP (s, default 3),
BENCH_CONNECTIONS (default "16 64"), BENCH_THREADS (wrk threads, default 2),
BENCH_KEEP=1 (keep the target for the lever experiments), BENCH_DOC (output path).

Layout: common (paths, knobs, helpers) <- target (the throwaway target, converges) <- load
(wrk, recovery) and images (baseline and variant builds) ; report (tables, out/PERFORMANCE.md);
__main__ (the full run and the subcommands). Run from the repository root:

    python3 -m bench                        the full run (bench/run.sh, `make bench`)
    python3 -m bench render RESULTS.json    re-render a run's results (no target needed)
    python3 -m bench levers WORKDIR [LEVER ...]   lever experiments (bench/levers/) on a
    python3 -m bench ansible-levers WORKDIR      target kept by BENCH_KEEP=1
"""
