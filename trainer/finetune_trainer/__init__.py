"""The finetune-operator trainer: Unsloth/TRL/PEFT fine-tuning that knows nothing of
Kubernetes. Importing this package is cheap; heavy libraries load inside the functions that
need them."""

import time

__version__ = "0.1.0"

# When the trainer process started (its first import), for time-to-first-step figures.
PROCESS_START = time.monotonic()
