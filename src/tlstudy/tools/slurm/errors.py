from tlstudy.lib.errors import StudyError


class SlurmError(StudyError):
    """Input the cluster route cannot run with (no sbatch, a dirty checkout, a bad slurm.yaml or
    -S): the message names the file, key or value and what is accepted."""
