"""Inspecting effective roots without a mount: preview (walk.py), explain (explain.py) and
diff (diff.py). Pure: every answer comes from the same `Tree` the mount serves, so the CLI
and the mount cannot disagree; nothing here knows about FUSE or the terminal."""
