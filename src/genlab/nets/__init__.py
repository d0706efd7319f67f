"""Plain nn.Module networks, free of training logic."""
