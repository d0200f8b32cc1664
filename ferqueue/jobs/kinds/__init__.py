"""The job kinds, one module each; every module here is imported by ferqueue.jobs.registry."""
