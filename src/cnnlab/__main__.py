"""`python -m cnnlab ...` — the same as the `cnnlab` command (and what `torchrun -m cnnlab` runs)."""

from cnnlab.cli import main

if __name__ == "__main__":
    main()
