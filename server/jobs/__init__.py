"""Background jobs: the job table, the command line of each job kind, and the supervisor."""
