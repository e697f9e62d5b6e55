"""Small trio utilities below the scope tree: process groups, thread offload, group commit."""
