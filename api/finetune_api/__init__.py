"""The FineTuneJob API: group, version, names, and the typed spec and status; the trainer's
config schema (config/), the operator-trainer contract and the CRD generator. No Kubernetes,
no torch."""

GROUP = "finetune.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "FineTuneJob"
PLURAL = "finetunejobs"
SINGULAR = "finetunejob"
SHORT_NAMES = ("ftj",)
CATEGORIES = ("ml",)
