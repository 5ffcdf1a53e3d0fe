"""What cli.py drives and no stage imports: profiles, bench, compare, queue, Slurm, publications."""
