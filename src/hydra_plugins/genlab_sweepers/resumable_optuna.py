"""An Optuna sweep that resumes: ``hydra.sweeper.storage=sqlite:///<file>`` and the same command again."""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING, Any

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)
# Hydra imports every plugin module when any command starts: optuna (2-3 s) is imported only by a sweep.


class ResumableOptunaSweeper(OptunaSweeper):
    """hydra-optuna-sweeper's sweeper, whose ``n_trials`` is the study's total rather than each command's.

    With a persistent ``storage``, running the same sweep again runs only the missing trials: the study
    is topped up to ``n_trials`` completed ones (failed and interrupted trials stay in it as FAIL and are
    not repeated as such). New jobs are numbered after the old ones, and the sampler is reseeded so that
    its random start does not repeat the first run's suggestions. A sweep stopped while a trial runs
    (SIGTERM, Ctrl-C, a crash of the sweeper) records that trial as FAIL before it exits.
    """

    def sweep(self, arguments: list[str]) -> None:
        import optuna
        from optuna.trial import TrialState

        impl = self.sweeper
        study = load_study(impl.storage, impl.study_name)
        known = len(study.trials) if study else 0
        if known:
            done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
            log.info(
                "Resuming study %r: %d of %d trials completed, %d failed or interrupted; running %d more",
                impl.study_name, done, impl.n_trials, known - done, max(impl.n_trials - done, 0),
            )  # fmt: skip
            impl.n_trials = max(impl.n_trials - done, 0)
            impl.job_idx = known
            if isinstance(impl.sampler, optuna.samplers.BaseSampler):
                impl.sampler.reseed_rng()
        previous = signal.signal(signal.SIGTERM, stop_on_sigterm)
        try:
            return impl.sweep(arguments)
        except BaseException as stop:
            if impl.storage:
                record_interrupted(load_study(impl.storage, impl.study_name), known, type(stop).__name__)
            if isinstance(stop, SystemExit) and not stop.code:  # Lightning's SIGTERM exit is status 0
                again = (
                    "run the same command again to finish it"
                    if impl.storage
                    else "give it a storage to resume"
                )
                raise SystemExit(f"The sweep was stopped ({type(stop).__name__}): {again}.") from stop
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)


def stop_on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM stops the sweep. During a fit Lightning's handler (installed over this one, calling it too)
    finishes the batch, saves ``last.ckpt`` and raises its own SIGTERMException; otherwise stop at once."""
    if signal.getsignal(signal.SIGTERM) is stop_on_sigterm:
        raise SystemExit(128 + signum)


def load_study(storage: Any, name: str | None) -> optuna.Study | None:
    """The study ``name`` in a persistent ``storage``; None without one, or before the study exists."""
    if not storage or not name:
        return None
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def record_interrupted(study: optuna.Study | None, first: int, reason: str) -> None:
    """Trials from number ``first`` on that are still running are told FAIL: the sweep stopped under them."""
    from optuna.trial import TrialState

    for trial in study.trials[first:] if study else []:
        if trial.state == TrialState.RUNNING:
            study.tell(trial.number, state=TrialState.FAIL)
            log.warning("Trial %d interrupted (%s): recorded as failed", trial.number, reason)
