"""``python -m edgeresnet ...`` (what ``torchrun -m edgeresnet`` runs)."""

from edgeresnet.cli.main import main

if __name__ == "__main__":
    main()
