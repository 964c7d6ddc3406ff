"""Training: one generic sharded loop; methods plug in as tasks."""

from fvjax.train.loop import LoopConfig, NonFiniteLossError, Task, TrainState, init_state, make_train_step, train
from fvjax.train.loop import train_from_config
from fvjax.train.optim import OptimizerConfig, learning_rate_schedule, make_optimizer

__all__ = [
    'LoopConfig', 'NonFiniteLossError', 'OptimizerConfig', 'Task', 'TrainState', 'init_state', 'learning_rate_schedule',
    'make_optimizer', 'make_train_step', 'train', 'train_from_config'
]
