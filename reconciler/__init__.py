"""The reconciler (runs each scheduled backup as a Job, writes status) and the backup runner inside the Job.
Imports `common`, never `webhook`."""
