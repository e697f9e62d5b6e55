"""Small trio utilities below the scope tree: process groups, thread offload (one call per job,
or many callers' calls batched into a few jobs), group commit, sleeps that report progress."""
