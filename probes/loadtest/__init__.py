"""Load tests: one engine behind `manage.py loadtest`, the REST API and the dashboard page.

profiles (when requests start), prompts (what they ask), client (one timed request),
metrics (what a run measured), thresholds (pass or fail), runner (the loop with its
caps), reports (JSON, CSV, HTML), jobs (stored runs in the background).
"""
