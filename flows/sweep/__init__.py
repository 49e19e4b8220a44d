"""`ganops sweep`: search hyperparameters with Optuna, then send the best generator through the retrain flow's gate.

    ganops sweep --space configs/sweeps/dcgan.yaml                     # trials one after another
    ganops sweep --space configs/sweeps/dcgan.yaml --workers 2         # two trials at a time on this machine
    ganops sweep --space configs/sweeps/dcgan.yaml --trials 40 train.steps=1000   # budget, base overrides

    from flows.sweep import sweep
    result = sweep(space="configs/sweeps/dcgan.yaml", trials=3)
    result["status"], result["sweep"]["best_trial"]        # "promoted" | "rejected" | "unchanged", 2

The search space file (flows.sweep.space) names the settings to vary, the objective (default: gate.primary_metric,
in its metric's direction), the budgets and the pruning. The flow (flows.sweep.flow):

1. config: the base config (params + overrides) and the space, checked before any trial runs;
2. version_data, train_classifier: the same tasks as the retrain flow, so every trial sees one data version and one
   lenet feature space;
3. study: an Optuna study in a database (registry.study_storage; by default optuna.db beside a SQLite tracking store;
   a PostgreSQL URL at scale), named by --study (default: the space file's name). Joining an existing study checks
   that it searches the same space toward the same objective on the same data and base config. Its MLflow parent
   run (`sweep-<study>`) is created once and shared by every process that joins;
4. trials: each trial trains one config (the base plus the trial's point) in its own MLflow child run (params,
   curves, sample grids, evaluation, model) through the retrain's own candidate routine (flows.candidate: run →
   train → evaluate → log), evaluating its EMA generator every pruning.every_steps on pruning.num_samples samples:
   Optuna's median rule stops trials that are worse than the earlier ones at the same step (the child run ends
   KILLED, tagged sweep.state=pruned). A trial that fails (diverges, a config combination the validator refuses) is
   recorded as failed, with its reason, and the sweep goes on. `--workers N` runs N worker processes on this
   machine; other hosts join the same study with the same command (and the same storage);
5. register, promote: the study's best trial (over every process) becomes a model version and goes through the
   same gate as a retrain's candidate; the parent run gets the results table and plots, and the flow run a markdown
   summary.

Distributed trials. With train.nproc_per_node > 1 (or train.nnodes > 1) in the base config, every trial trains
as a retrain's candidate does: torchrun's processes, rank 0 logging into the trial's run. The EMA generator then
lives in those processes, out of the pruner's reach, so a distributed trial is judged at its end only: it reports
no intermediate value and the median rule never stops it (pruning.* applies to single-process trials).

Budgets. `trials` counts the study's finished trials (completed, pruned, failed), plus those running, over every
process: each process stops starting trials once it is reached, so a resumed sweep runs what is left.
`timeout_s` bounds one process: it starts no trial after that many seconds. A trial whose process died is retried
with the same point: interrupted (Ctrl-C) trials when a sweep on the study starts next, killed ones once their
heartbeat is older than HEARTBEAT_GRACE_S. A trial's outputs live in outputs/sweep/<study>/<training hash>, so a
retried point resumes its checkpoint.

One module per job: space (the search space file), study (its database, plan, fingerprint and parent run), trials
(running them: the candidate routine, pruning, retries, worker processes), results (table, plots, summary), flow
(the Prefect flow, `flows/sweep/flow.py:sweep` for a deployment).
"""

from flows.sweep.flow import check_budget, check_sweep_args, sweep
from flows.sweep.results import best_first, best_trial, trial_rows
from flows.sweep.space import SearchSpace, load_space, suggest
from flows.sweep.study import ERROR_ATTR, RETRY_ATTR, SweepPlan, shown_url, study_storage
from flows.sweep.trials import counted, requeue_interrupted, run_trials

__all__ = [
    "ERROR_ATTR",
    "RETRY_ATTR",
    "SearchSpace",
    "SweepPlan",
    "best_first",
    "best_trial",
    "check_budget",
    "check_sweep_args",
    "counted",
    "load_space",
    "requeue_interrupted",
    "run_trials",
    "shown_url",
    "study_storage",
    "suggest",
    "sweep",
    "trial_rows",
]
