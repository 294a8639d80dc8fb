"""``python -m finetune_operator`` / the ``finetune-operator`` command."""

from .runner import main

if __name__ == "__main__":
    main()
