"""`make bench` (issues 5 and 14): deploy to a throwaway local target and measure, in ONE run:

  * converge: cold (fresh target -> all healthy) and three warm runs (second to fourth,
    each once the machine is quiet, see common.settle): wall time (the target judged on
    the warm runs' median), changed count, image build/load tasks that changed, tasks over
    2 s, and the first warm run's slowest ten tasks (ansible.posix.profile_tasks, enabled in
    ansible.cfg);
  * the request path with wrk on 127.0.0.1 through the published NGINX port, at 16 and 64
    connections: NGINX's own /health (the proxy's ceiling), the app's /health through NGINX
    (/app-health, see below) and / (Redis INCR + PostgreSQL write and read);
  * the same NGINX image alone in the same target (no backend), same port and path;
  * recovery: the live app release's container removed, a converge starts a new release ->
    first 200 on /;
  * the release timeline (bench/release.py): a one-line app change (app/ copied, a suffix on
    __version__) shipped by a converge with stack_images_app_build_dir, while GET / is
    polled through NGINX every 0.1 s: the command's wall time, when the new version first
    answered, failed requests, and each phase (build, export, copy, load, release start and
    health gate, NGINX switch, drain) from profile_tasks;
  * the baseline, the seed's way (bench/baseline/: Flask's dev server, one process, a new
    Redis and PostgreSQL connection per request), deployed the same way (site.yml on the
    same target, the app image swapped), and every / figure as a ratio to it.

The app runs one container per release, `prodstack-app-<release id>` (labels prodstack.role=app,
prodstack.release): Target.app_container() finds the live one (the release NGINX serves). The
report gives its sizing from the container's APP_WORKERS / APP_THREADS and names the program
that serves from its main process.

It prints markdown tables and writes out/PERFORMANCE.md and the chart it links,
out/performance.png (bench/chart.py: req/s and p99 per configuration, the release timeline);
`make docs` copies both to docs/. Everything it creates on this machine is named bench-* and
removed at the end, except the bench/baseline:<hash> image (kept so later runs skip its
build); the release timeline's one-off app image is removed too. Logs of every converge and
wrk run, results.json and the release's polls: bench/out/<run>/.

NGINX answers `location = /health` itself; the role's template proxies `location =
/app-health` to the app's /health (the release switch probes it). Should a deployed file lack
it, the benchmark adds that location on its throwaway target and reloads NGINX
(Target.patch_nginx); with the role's template as it is, nothing is added. The HTTPS port,
when the stack publishes one, gets a `/` row too.

Environment: BENCH_DURATION (s per wrk run, default 15), BENCH_WARMUP (s, default 3),
BENCH_CONNECTIONS (default "16 64"), BENCH_THREADS (wrk threads, default 2),
BENCH_KEEP=1 (keep the target for the lever experiments), BENCH_DOC (output path; the
chart goes beside it).

Layout: common (paths, knobs, helpers) <- target (the throwaway target, converges) <- load
(wrk, recovery), release (the release timeline) and images (baseline and variant builds);
report (tables, out/PERFORMANCE.md) and chart (out/performance.png); __main__ (the full run
and the subcommands). Run from the repository root:

    python3 -m bench                        the full run (bench/run.sh, `make bench`)
    python3 -m bench render RESULTS.json    re-render a run's results and chart (no target needed)
    python3 -m bench levers WORKDIR [LEVER ...]   lever experiments (bench/levers/) on a
    python3 -m bench ansible-levers WORKDIR      target kept by BENCH_KEEP=1
"""
