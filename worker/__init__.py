"""tlogsync: POS TLog files from SFTP into the order management system.

`celery -A worker` finds the Celery application in `worker.celery`; importing this
package itself imports nothing, so the pure core stays free of Celery.
"""
