"""The finetune-operator: a kopf operator that runs FineTuneJobs as GPU batch/v1 Jobs."""

__version__ = "0.1.0"
