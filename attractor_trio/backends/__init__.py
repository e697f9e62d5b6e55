"""What executes a codergen stage: simulation, CLI agents, the agent loop, provider-backed calls."""
