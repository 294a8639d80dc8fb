"""The finetune-operator trainer: Unsloth/TRL/PEFT fine-tuning that knows nothing of
Kubernetes. Importing this package is cheap; heavy libraries load inside the functions that
need them."""

__version__ = "0.1.0"
