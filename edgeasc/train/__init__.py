"""Training, on the workstation (torch): a run's config (config.py, flags + TOML), the run and
its directory (run.py), one epoch (loop.py), what changes with the epoch (schedule.py: the
learning rate, the pruning ramps), checkpoints that never execute code (checkpoint.py),
evaluation of a model and of a finished run (evaluate.py), weight averaging (swa.py),
distillation (distill.py), processes and devices (distributed.py), the torch frontend
(frontend.py, the runtime's numpy one in torch) and plots.

May import: compress, data, models, runtime and the base (errors, io, console). Never export
or cli. `from edgeasc.train.run import train` runs a training from a `TrainConfig`.
"""
