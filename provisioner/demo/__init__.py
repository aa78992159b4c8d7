"""`make demo`: the main job on the embedded defaults (examples/cluster)."""
