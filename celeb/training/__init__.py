"""Training: the one loop (`loop.fit`) and its task adapters, checkpoints that resume exactly, the run
folder a run leaves on disk, and the local debug run behind `celeb train`."""
