"""Every entry point (Hydra / argparse main). Importing the package registers the main job's
config schemas with Hydra (recsim/jobs/schemas.py), before any config is composed."""

from recsim.jobs.schemas import register

register("config")
