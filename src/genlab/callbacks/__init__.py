"""Lightning callbacks for cross-cutting behaviour (metrics, sample grids, config in checkpoints)."""
