"""`celery -A worker worker` and `celery -A worker beat` find the Celery application here.

The application itself, its configuration and its signal handlers live in `worker.app.factory`.
"""

from worker.app.factory import app

__all__ = ["app"]
