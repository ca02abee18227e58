"""Ray Tune jobs: the sweep driver (`python -m jobs.sweep SPEC.yaml`) and the trial it runs.

Everything that imports Ray lives here; the `celeb` library never does.
"""
