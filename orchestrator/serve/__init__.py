"""The served model: a Ray Serve application (app.py) with a FastAPI ingress, batched inference, and one
small static page (index.html). Uploads are read and refused in uploads.py. It names no task: what a
request answers comes from the task's own outputs through `trainables.inference`, as `predict` does."""
