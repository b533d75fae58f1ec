"""Run a benchmark grid (models x methods x bits x calibration seeds x scopes) into a results store.

    python tools/quant_suite.py SUITE.yaml [--store results.sqlite] [--work-dir DIR] [--launcher {none,pytorch}]
                                [--nproc N] [--dry-run] [--max-runs N]

SUITE is a YAML file or a Python config (see quant_hooks/results/suite.py for the fields). The suite is
resumable: a run whose resolved config hash and checkpoint digest are already in the store is skipped, so an
interrupted suite started again runs only what is missing. Runs go one after another in this process, or each
through tools/dist_quant_test.sh with --launcher pytorch. A progress bar shows the runs left and an ETA.
Exit status: 0 when every run succeeded (or was already stored), 1 when some failed, 2 on a bad grid.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from quant_hooks.results.suite import SuiteError, check_grid, expand_grid  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('suite', help='suite grid (.yaml / .yml / .py)')
    p.add_argument('--store', help='results store (default: the grid field store)')
    p.add_argument('--work-dir', help='parent of the runs\' work directories (default: the grid field work_dir, '
                   'else work_dirs/suites/NAME)')
    p.add_argument('--launcher', choices=['none', 'pytorch'], help='override the grid field launcher')
    p.add_argument('--nproc', type=int, help='processes per run with --launcher pytorch (grid field nproc)')
    p.add_argument('--dry-run', action='store_true', help='list the runs and which are stored; run nothing')
    p.add_argument('--max-runs', type=int, help='stop after this many runs (the rest stay for the next start)')
    return p.parse_args(argv)


def load_grid(path: str) -> dict:
    """The grid dict of a YAML file or a Python config."""
    if not osp.isfile(path):
        raise SuiteError(f'suite file not found: {path!r}')
    from mmengine.config import Config
    return Config.fromfile(path).to_dict()


def plan(grid: dict, work_root: str, launcher: str) -> list[tuple]:
    """Every run of the grid with its resolved config, checkpoint and run key."""
    from quant_hooks.runs import build_run_config, dump_for_launcher, repo_path, run_key
    planned = []
    for run in expand_grid(grid):
        cfg = build_run_config(run.config, run.options, osp.join(work_root, run.label))
        checkpoint = repo_path(run.checkpoint)
        key = run_key(cfg, checkpoint)
        if launcher == 'pytorch':  # the hash of the config the launcher will read back
            key = (dump_for_launcher(cfg)[1], key[1])
        planned.append((run, cfg, checkpoint, key))
    return planned


def main(argv=None) -> int:
    """Run the suite; returns the exit status."""
    from tqdm import tqdm

    from quant_hooks.results import ResultStore
    from quant_hooks.runs import run_distributed, run_in_process, stored_runs

    args = parse_args(argv)
    grid = check_grid(load_grid(args.suite))
    launcher = args.launcher or grid['launcher']
    nproc = args.nproc or grid['nproc']
    store_path = args.store or grid.get('store')
    if not store_path:
        raise SuiteError('no results store: give --store PATH or the suite field store')
    work_root = args.work_dir or grid.get('work_dir') or osp.join('work_dirs', 'suites', grid['name'])
    planned = plan(grid, work_root, launcher)
    with ResultStore(store_path) as store:
        done = [bool(stored_runs(store, key, grid['eval_float'])) for *_, key in planned]
    pending = [p for p, d in zip(planned, done) if not d]
    print(f'suite {grid["name"]}: {len(planned)} runs, {sum(done)} already in {store_path}, {len(pending)} to run')
    if args.dry_run:
        for (run, _, _, key), d in zip(planned, done):
            print(f'  {"stored " if d else "pending"}  {run.label}  config_hash={key[0]}')
        return 0
    if args.max_runs is not None:
        pending = pending[:max(args.max_runs, 0)]
    failed = []
    bar = tqdm(pending, desc=f'suite {grid["name"]}', unit='run', file=sys.stdout, dynamic_ncols=True)
    for run, cfg, checkpoint, _ in bar:
        bar.set_postfix_str(run.label)
        start = time.perf_counter()
        try:
            if launcher == 'pytorch':
                run_distributed(cfg, checkpoint, grid['eval_float'], store_path, nproc)
            else:
                run_in_process(cfg, checkpoint, grid['eval_float'], store_path)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # one broken run does not stop the grid; it is reported and exits non-zero
            failed.append(run.label)
            tqdm.write(f'FAILED {run.label}: {type(e).__name__}: {e}')
            continue
        tqdm.write(f'done {run.label} in {time.perf_counter() - start:.1f}s')
    bar.close()
    print(f'suite {grid["name"]}: {len(pending) - len(failed)} run, {len(failed)} failed'
          + (f': {failed}' if failed else ''))
    return 1 if failed else 0


if __name__ == '__main__':
    from quant_hooks.apis import USER_ERRORS
    try:
        sys.exit(main())
    except (SuiteError, *USER_ERRORS) as e:
        print(f'quant_suite: error: {e}', file=sys.stderr)
        sys.exit(2)
