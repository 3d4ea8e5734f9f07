"""Process exit codes shared by every datalaws command (one place, so launchers and CLIs agree)."""

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_USAGE = 2
EXIT_BAD_DIAGNOSTICS = 3  # the fit was written, but its sampler diagnostics failed
EXIT_REQUEUE = 75  # EX_TEMPFAIL: preempted, checkpoint saved, requeue me

__all__ = ["EXIT_BAD_DIAGNOSTICS", "EXIT_BAD_INPUT", "EXIT_OK", "EXIT_REQUEUE", "EXIT_USAGE"]
