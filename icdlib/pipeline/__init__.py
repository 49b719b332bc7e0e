"""The DVC pipeline behind ``dvc repro``: its stages, the report and the profiles.

Each notebook stage calls one module here, and each module imports only what its stage
runs, so ``dvc.yaml`` can list narrow deps (a table's formatting re-runs only the report).
"""
