"""The pipeline-search kind's dashboard pages (registered under `tunelab.dashboard_pages`)."""
